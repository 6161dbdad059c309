# A real Rucio server as a loopback test peer (sourced by scripts/services.sh).
#   scripts/services.sh up|status|down rucio
# Recipe: ../shared/reference/im-and-rucio-test-peers.md, part 2. The PyPI `rucio`
# server package runs in its own venv ($RUN/rucio/venv) under gunicorn on
# 127.0.0.1:$ORCH_RUCIO_PORT (plain http), backed by a database `rucio` on the
# project's PostgreSQL cluster. Every real start drops and recreates that database,
# so each start begins with an empty Rucio (root account, userpass identity).
# Generated secrets stay in $RUN/rucio (mode 600) and are never printed.
# Uses the helpers of scripts/services.sh: log, die, wait_until, random_secret,
# pid_is_ours, stop_pid, service_venv, postgres_up, and ROOT, RUN, PG_BIN, PG_DIR, PG_PORT.

RUCIO_VERSION=41.5.1          # the version the recipe tested end to end
RUCIO_GUNICORN_VERSION=27.0.1 # 27 has --no-control-socket (nothing written to ~/.gunicorn)
RUCIO_PSYCOPG_VERSION=3.2.13  # the driver version the recipe ran with
RUCIO_PORT="${ORCH_RUCIO_PORT:-18443}"
RUCIO_DIR="$RUN/rucio"
RUCIO_VENV="$RUCIO_DIR/venv"
RUCIO_DB=rucio
RUCIO_DB_ROLE=rucio
RUCIO_ACCOUNT=root
RUCIO_USERNAME=orchestrator   # the root account's userpass identity

rucio_url() { echo "http://127.0.0.1:$RUCIO_PORT"; }
rucio_pid() { [ -s "$RUCIO_DIR/pid" ] && cat "$RUCIO_DIR/pid"; }
rucio_running() { pid_is_ours "$(rucio_pid)" "$RUCIO_VENV/bin/gunicorn"; }  # our gunicorn master
rucio_port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$RUCIO_PORT") 2>/dev/null; }

rucio_ping() {  # prints /ping's body, e.g. {"version":"41.5.1"} (no curl on a bare Debian)
  "$RUCIO_VENV/bin/python" -c 'import sys, urllib.request
sys.stdout.write(urllib.request.urlopen(sys.argv[1] + "/ping", timeout=2).read().decode())' "$(rucio_url)" 2>/dev/null
}
rucio_answers() { rucio_ping | grep -q '"version"'; }

rucio_install() {
  local stamp="$RUCIO_VENV/.installed-rucio-$RUCIO_VERSION-gunicorn-$RUCIO_GUNICORN_VERSION-psycopg-$RUCIO_PSYCOPG_VERSION"
  [ -f "$stamp" ] && return 0
  log "installing rucio $RUCIO_VERSION (server) into $RUCIO_VENV"
  service_venv "$RUCIO_VENV"
  "$RUCIO_VENV/bin/pip" install -q --upgrade pip >/dev/null
  "$RUCIO_VENV/bin/pip" install -q "rucio[postgresql]==$RUCIO_VERSION" \
    "psycopg[binary]==$RUCIO_PSYCOPG_VERSION" "gunicorn==$RUCIO_GUNICORN_VERSION" \
    || die "pip could not install rucio $RUCIO_VERSION"
  touch "$stamp"
}

# The superuser URL of the project's cluster (ORCH_ADMIN_DATABASE_URL in .run/env).
# On a fresh machine .run/env is written only after every "up", so fall back to the
# same values write_env uses.
rucio_admin_url() {
  local url="${ORCH_ADMIN_DATABASE_URL:-}"
  [ -n "$url" ] || url=$(sed -n 's/^ORCH_ADMIN_DATABASE_URL=//p' "$RUN/env" 2>/dev/null || true)
  [ -n "$url" ] || url="postgresql://postgres:$(cat "$PG_DIR/superuser.password")@127.0.0.1:$PG_PORT/postgres"
  echo "$url"
}

rucio_admin_psql() {  # the password goes through PGPASSWORD, not the command line
  local url re='^postgres(ql)?://([^:@/]+):([^@/]*)@([^:/]+):([0-9]+)/([^?]+)'
  url=$(rucio_admin_url)
  [[ $url =~ $re ]] || die "cannot parse the superuser database URL"
  PGPASSWORD="${BASH_REMATCH[3]}" "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 \
    -h "${BASH_REMATCH[4]}" -p "${BASH_REMATCH[5]}" -U "${BASH_REMATCH[2]}" -d "${BASH_REMATCH[6]}" "$@"
}

rucio_write_config() {  # rucio_write_config DB_URL: rucio.cfg and alembic.ini under $RUCIO_DIR
  local db_url=$1 site
  site=$("$RUCIO_VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  ( umask 077
  cat > "$RUCIO_DIR/rucio.cfg" <<CFG
[common]
logdir = $RUCIO_DIR/log
loglevel = INFO
mailtemplatedir = $RUCIO_VENV/rucio/etc/mail_templates

[database]
default = $db_url
schema = rucio
echo = false
pool_size = 5
max_overflow = 5
pool_reset_on_return = rollback

[alembic]
cfg = $RUCIO_DIR/alembic.ini

[policy]
permission = generic
schema = generic
lfn2pfn_algorithm_default = hash
support = orchestrator@localhost
CFG
  cat > "$RUCIO_DIR/alembic.ini" <<CFG
[alembic]
script_location = $site/rucio/db/sqla/migrate_repo
version_table_schema = rucio
sqlalchemy.url = $db_url

[loggers]
keys = root
[handlers]
keys = console
[formatters]
keys = generic
[logger_root]
level = WARN
handlers = console
[handler_console]
class = StreamHandler
args = (sys.stderr,)
formatter = generic
[formatter_generic]
format = %(levelname)-5.5s [%(name)s] %(message)s
CFG
  )
}

rucio_fresh_database() {  # drop and recreate role + database, then schema, base VO, root account
  local db_pw root_pw
  db_pw=$(random_secret)
  [ -s "$RUCIO_DIR/root.password" ] || ( umask 077; random_secret > "$RUCIO_DIR/root.password" )
  chmod 600 "$RUCIO_DIR/root.password"
  root_pw=$(cat "$RUCIO_DIR/root.password")
  log "creating a fresh database '$RUCIO_DB' for Rucio on 127.0.0.1:$PG_PORT"
  rucio_admin_psql >/dev/null <<SQL || die "could not recreate the Rucio database"
SET client_min_messages = warning;
DROP DATABASE IF EXISTS $RUCIO_DB WITH (FORCE);
DROP ROLE IF EXISTS $RUCIO_DB_ROLE;
CREATE ROLE $RUCIO_DB_ROLE LOGIN PASSWORD '$db_pw';
CREATE DATABASE $RUCIO_DB OWNER $RUCIO_DB_ROLE;
SQL
  rucio_write_config "postgresql+psycopg://$RUCIO_DB_ROLE:$db_pw@127.0.0.1:$PG_PORT/$RUCIO_DB"
  # The bootstrap reads the root identity's password from [bootstrap]; that section
  # lives only in a temporary copy, so the server's rucio.cfg never holds it.
  local boot_cfg="$RUCIO_DIR/bootstrap.cfg"
  ( umask 077
    cat "$RUCIO_DIR/rucio.cfg" - > "$boot_cfg" <<CFG

[bootstrap]
userpass_identity = $RUCIO_USERNAME
userpass_pwd = $root_pw
userpass_email = root@localhost
CFG
  )
  log "bootstrapping the Rucio schema and the root account"
  if ! (cd "$RUCIO_DIR" && RUCIO_CONFIG="$boot_cfg" "$RUCIO_VENV/bin/python" -c '
from rucio.db.sqla.util import build_database, create_base_vo, create_root_account
build_database(); create_base_vo(); create_root_account()' > "$RUCIO_DIR/log/bootstrap.log" 2>&1); then
    rm -f "$boot_cfg"
    die "Rucio bootstrap failed; see $RUCIO_DIR/log/bootstrap.log"
  fi
  rm -f "$boot_cfg"
  # What clients need besides the password file (nothing secret here).
  cat > "$RUCIO_DIR/env" <<ENV
# Written by scripts/services.d/rucio.sh; the password is in root.password next to this file.
ORCH_RUCIO_URL=$(rucio_url)
ORCH_RUCIO_ACCOUNT=$RUCIO_ACCOUNT
ORCH_RUCIO_USERNAME=$RUCIO_USERNAME
ORCH_RUCIO_PASSWORD_FILE=$RUCIO_DIR/root.password
ENV
}

rucio_stop_ours() {  # TERM our gunicorn master (it stops its workers), KILL after 30 s
  if rucio_running; then stop_pid Rucio "$(rucio_pid)" 30; fi
  rm -f "$RUCIO_DIR/pid"
}

rucio_up() {
  # postgres_up's `chown -R` of the data directory can race with files that other
  # sessions' databases create and drop meanwhile, so a running cluster is left alone.
  pg_ready || postgres_up
  rucio_install
  mkdir -p "$RUCIO_DIR/log"
  if rucio_running && rucio_answers; then return 0; fi
  rucio_stop_ours   # a master that is alive but does not answer is restarted
  # Workers of a master that died hold the port until they notice (a few seconds).
  if ! wait_until 30 rucio-port-free rucio_port_free; then
    die "127.0.0.1:$RUCIO_PORT is taken by a process this script did not start (set ORCH_RUCIO_PORT)"
  fi
  local started=$SECONDS
  rucio_fresh_database
  log "starting Rucio $RUCIO_VERSION on $(rucio_url)"
  : > "$RUCIO_DIR/log/gunicorn.log"
  (cd "$RUCIO_DIR" && export RUCIO_CONFIG="$RUCIO_DIR/rucio.cfg" TMPDIR="$RUCIO_DIR" \
    && exec nohup "$RUCIO_VENV/bin/gunicorn" --bind "127.0.0.1:$RUCIO_PORT" --workers 2 --timeout 60 \
    --no-control-socket --access-logfile "$RUCIO_DIR/log/access.log" \
    --error-logfile "$RUCIO_DIR/log/gunicorn.log" \
    rucio.web.rest.flaskapi.v1.main:application > "$RUCIO_DIR/log/stdout.log" 2>&1 < /dev/null) &
  echo $! > "$RUCIO_DIR/pid"
  if ! wait_until 90 rucio rucio_answers; then
    rucio_stop_ours
    die "Rucio does not answer on $(rucio_url)/ping; see $RUCIO_DIR/log/gunicorn.log"
  fi
  log "Rucio answers after $((SECONDS - started)) s"
}

rucio_down() {
  rucio_stop_ours
  # Dropped after gunicorn has stopped, so no pooled connection holds the database.
  if pg_ready 2>/dev/null; then
    rucio_admin_psql >/dev/null <<SQL || log "could not drop the Rucio database"
SET client_min_messages = warning;
DROP DATABASE IF EXISTS $RUCIO_DB WITH (FORCE);
DROP ROLE IF EXISTS $RUCIO_DB_ROLE;
SQL
  fi
}

rucio_status() {
  if rucio_running && rucio_answers; then
    echo "rucio: up on $(rucio_url) (pid $(rucio_pid), $(rucio_ping))"
  else
    echo "rucio: down"
  fi
}
