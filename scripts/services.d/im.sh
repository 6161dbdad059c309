# A real Infrastructure Manager (IM) REST server as a loopback test peer, with
# its Dummy cloud connector. Sourced by scripts/services.sh (which defines log,
# die, wait_until, random_secret, pid_is_ours, stop_pid, service_venv, ROOT and
# RUN); started only when named: `services.sh up im`.
# Recipe and pitfalls: ../shared/reference/im-and-rucio-test-peers.md, part 1.
#
# - The PyPI `IM` package, pinned, in its own virtual environment ($RUN/im/venv),
#   never in the project's .venv (IM pulls in ansible, paramiko, FastAPI...).
# - IM 2.0.0 has no flag or variable for its config path (it reads
#   <site-packages>/im.cfg and /etc/im/im.cfg at import). A small launcher
#   applies $IM_DIR/im.cfg to IM's Config before IM's service module is
#   imported (pitfall 7), so several instances can share one venv.
# - Bound to 127.0.0.1 only; a fresh SQLite database on every start (pitfall 2:
#   an IM that reloads a stored TOSCA infrastructure, after a restart or a lost
#   delete, stops validating templates for the rest of its life).
# - Users and passwords: $IM_DIR/users.json (generated; see im_write_users).
# - ORCH_IM_PORT (default 18899) and ORCH_IM_DIR (default $RUN/im) select the
#   instance; the venv is always $RUN/im/venv. Clients use ORCH_IM_URL, whose
#   default in handlers/im_client.py is http://127.0.0.1:18899.
# - Never send it a template that enables contextualization (pitfall 3).

IM_VERSION="${ORCH_IM_VERSION:-2.0.0}"
IM_PORT="${ORCH_IM_PORT:-18899}"
IM_DIR="${ORCH_IM_DIR:-$RUN/im}"   # tests point this at a private instance
IM_VENV="$RUN/im/venv"

im_pid() { [ -f "$IM_DIR/pid" ] && cat "$IM_DIR/pid"; }
im_running() { pid_is_ours "$(im_pid)" "$IM_DIR/im.cfg"; }
im_answers() { curl -sf --max-time 2 "http://127.0.0.1:$IM_PORT/version" >/dev/null; }

im_install() {
  [ -x "$IM_VENV/bin/im_service" ] && [ -f "$IM_VENV/.installed-$IM_VERSION" ] && return 0
  command -v curl >/dev/null || {
    log "installing curl"; export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq curl >/dev/null
  }
  log "installing IM $IM_VERSION from PyPI into $IM_VENV (about a minute)"
  service_venv "$IM_VENV"
  mkdir -p "$IM_DIR"
  # PyPI only: ignore any machine-wide extra index or local wheel directory.
  local pip=(env PIP_FIND_LINKS= PIP_EXTRA_INDEX_URL= PIP_CACHE_DIR="$RUN/pip-cache"
             "$IM_VENV/bin/pip" --disable-pip-version-check -q)
  "${pip[@]}" install --index-url https://pypi.org/simple --upgrade pip >/dev/null \
    || die "pip upgrade failed"
  "${pip[@]}" install --index-url https://pypi.org/simple "IM==$IM_VERSION" \
    || die "pip install IM==$IM_VERSION failed"
  # The `ansible` meta-package is ~470 MB of collections that only
  # contextualization uses; the Dummy connector never needs it (pitfall 8).
  "${pip[@]}" uninstall -y ansible >/dev/null 2>&1 || true
  [ -x "$IM_VENV/bin/im_service" ] || die "IM installed without im_service"
  touch "$IM_VENV/.installed-$IM_VERSION"
}

im_write_users() {
  # IM checks username/password lines against USER_DB (re-read on every
  # request), so wrong IM credentials really are rejected (401). Two users, so
  # tests can also see that one user cannot touch the other's infrastructures.
  # Generated once, kept across restarts, readable by the owner only.
  [ -s "$IM_DIR/users.json" ] && return 0
  ( umask 077
    printf '{"users": [{"username": "orchestrator", "password": "%s"}, {"username": "other", "password": "%s"}]}\n' \
      "$(random_secret)" "$(random_secret)" > "$IM_DIR/users.json" )
}

# Runs IM's own service entry point with $1 (an im.cfg) applied to its Config
# first: the REST address and port are read when IM.im_service is imported.
IM_LAUNCHER='
import configparser, sys
import IM.config as im_config
parser = configparser.ConfigParser()
if not parser.read(sys.argv[1]):
    raise SystemExit("cannot read " + sys.argv[1])
im_config.parse_options(parser, "im", im_config.Config)
sys.argv = ["im_service"]
from IM.im_service import main
main()
'

im_write_config() {
  # WAIT_*/interval values keep failure paths short (defaults: minutes).
  cat > "$IM_DIR/im.cfg" <<CFG
# Written by scripts/services.d/im.sh on every start; local test peer only.
[im]
REST_ADDRESS = 127.0.0.1
REST_PORT = $IM_PORT
REST_SSL = False
DATA_DB = $IM_DIR/inf.dat
USER_DB = $IM_DIR/users.json
LOG_FILE = $IM_DIR/im.log
LOG_LEVEL = INFO
WAIT_PUBLIC_IP_TIMEOUT = 10
WAIT_SSH_ACCCESS_TIMEOUT = 10
WAIT_RUNNING_VM_TIMEOUT = 60
MAX_CONTEXTUALIZATION_TIME = 120
VM_INFO_UPDATE_FREQUENCY = 2
VM_INFO_UPDATE_ERROR_GRACE_PERIOD = 10
CONFMAMAGER_CHECK_STATE_INTERVAL = 1
CHECK_CTXT_PROCESS_INTERVAL = 2
UPDATE_CTXT_LOG_INTERVAL = 2
CFG
}

im_up() {
  if im_running; then
    wait_until 60 im im_answers || die "IM (pid $(im_pid)) runs but does not answer; see $IM_DIR/im.log"
    return 0
  fi
  rm -f "$IM_DIR/pid"
  if im_answers; then
    die "something not started by this script already answers on 127.0.0.1:$IM_PORT (set ORCH_IM_PORT)"
  fi
  im_install
  mkdir -p "$IM_DIR/tmp"
  im_write_users
  im_write_config
  rm -f "$IM_DIR/inf.dat" "$IM_DIR/tosca_cache.sqlite"   # fresh state on every start
  : > "$IM_DIR/im.log"
  log "starting IM $IM_VERSION on 127.0.0.1:$IM_PORT"
  # IM writes tosca_cache.sqlite into its working directory and ansible files
  # under $HOME: keep both in $IM_DIR. The subshell's exec keeps $! = IM's PID.
  (
    cd "$IM_DIR"
    HOME="$IM_DIR" TMPDIR="$IM_DIR/tmp" exec nohup env -u IM_DATA_DB \
      "$IM_VENV/bin/python" -c "$IM_LAUNCHER" "$IM_DIR/im.cfg" \
      > "$IM_DIR/stdout.log" 2>&1 < /dev/null
  ) &
  echo $! > "$IM_DIR/pid"
  disown $! 2>/dev/null || true
  wait_until 120 im im_answers || {
    im_down
    die "IM did not answer on 127.0.0.1:$IM_PORT; see $IM_DIR/stdout.log and $IM_DIR/im.log"
  }
}

im_down() {
  # On SIGTERM IM stops uvicorn and its children (~3 s).
  if im_running; then stop_pid IM "$(im_pid)" 30; fi
  rm -f "$IM_DIR/pid"
}

im_status() {
  if im_running && im_answers; then
    echo "im: up on 127.0.0.1:$IM_PORT (IM $(curl -sf --max-time 2 "http://127.0.0.1:$IM_PORT/version"), pid $(im_pid))"
  else
    echo "im: down"
  fi
}
