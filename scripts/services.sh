#!/usr/bin/env bash
# Local services for running and testing the orchestrator, all bound to loopback.
#   scripts/services.sh up|status|down [postgres|kafka|im|rucio ...]
#   (default: postgres and kafka; im and rucio only when named)
# Idempotent: "up" on a running service only checks it answers. State and
# generated credentials live in .run/ (git-ignored); nothing secret is committed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUN="$ROOT/.run"
PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"
PG_PORT="${ORCH_PG_PORT:-54329}"
PG_DIR="$RUN/postgres"
KAFKA_PORT="${ORCH_KAFKA_PORT:-19092}"
KAFKA_CONTROLLER_PORT="${ORCH_KAFKA_CONTROLLER_PORT:-19093}"
KAFKA_DIR="${ORCH_KAFKA_DIR:-$RUN/kafka}"  # tests point this at a private broker
KAFKA_LIB="$ROOT/services/kafka/lib"
ENV_FILE="$RUN/env"

log() { printf '[services] %s\n' "$*" >&2; }
die() { printf '[services] error: %s\n' "$*" >&2; exit 1; }

as_pg() {  # postgres refuses to run as root: use the package's postgres user then
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

wait_until() {  # wait_until SECONDS DESCRIPTION COMMAND...
  local deadline=$((SECONDS + $1)) what=$2; shift 2
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.5
  done
}

random_secret() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }

# ---------------------------------------------------------------- processes we started
pid_is_ours() {  # pid_is_ours PID ARG: PID is alive and one of its arguments is exactly ARG
  # (a PID file can outlive its process, and the PID be reused by another command)
  [ -n "$1" ] && kill -0 "$1" 2>/dev/null \
    && tr '\0' '\n' < "/proc/$1/cmdline" 2>/dev/null | grep -qxF -- "$2"
}

pid_gone() {  # pid_gone PID: exited (a zombie nobody has reaped yet counts as gone)
  [ ! -d "/proc/$1" ] || grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null
}

stop_pid() {  # stop_pid NAME PID SECONDS: SIGTERM, then SIGKILL if still running after SECONDS
  log "stopping $1 (pid $2)"
  kill -TERM "$2" 2>/dev/null || true
  wait_until "$3" "$1-stop" pid_gone "$2" \
    || { log "$1 did not stop in time; killing pid $2"; kill -KILL "$2" 2>/dev/null || true; }
}

# ---------------------------------------------------------------- service venvs (IM, Rucio)
service_venv() {  # service_venv DIR: a new, empty virtual environment for a service's packages
  local python="${PYTHON:-python3.11}"
  command -v "$python" >/dev/null || python=python3
  if ! "$python" -c 'import ensurepip, venv' 2>/dev/null; then
    log "installing python3-venv"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
  fi
  rm -rf "$1"
  mkdir -p "$(dirname "$1")"
  "$python" -m venv "$1" || die "could not create $1"
}

# ---------------------------------------------------------------- postgres
postgres_install() {
  [ -x "$PG_BIN/initdb" ] && return 0
  log "installing PostgreSQL 15 from Debian packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq postgresql-15 postgresql-client-15 >/dev/null
  [ -x "$PG_BIN/initdb" ] || die "PostgreSQL 15 install failed"
}

pg_ready() { "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"; }

postgres_up() {
  postgres_install
  mkdir -p "$PG_DIR"
  if [ ! -s "$PG_DIR/superuser.password" ]; then random_secret > "$PG_DIR/superuser.password"; fi
  if [ ! -s "$PG_DIR/app.password" ]; then random_secret > "$PG_DIR/app.password"; fi
  chmod 600 "$PG_DIR"/*.password
  if [ "$(id -u)" = 0 ]; then
    # Only the directory and secrets: a recursive chown over a live cluster races
    # with databases being created and dropped.
    chown postgres:postgres "$PG_DIR" "$PG_DIR"/*.password
  fi
  if [ ! -f "$PG_DIR/data/PG_VERSION" ]; then
    log "initialising a PostgreSQL cluster in $PG_DIR/data"
    as_pg "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres --auth-local=peer \
      --auth-host=scram-sha-256 --pwfile="$PG_DIR/superuser.password" -E UTF8 >/dev/null
    cat >> "$PG_DIR/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_DIR'
max_connections = 300
shared_buffers = 512MB
synchronous_commit = on
idle_in_transaction_session_timeout = '60s'
fsync = on
CONF
  fi
  if ! pg_ready; then
    log "starting PostgreSQL on 127.0.0.1:$PG_PORT"
    as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 start >/dev/null \
      || die "PostgreSQL did not start; see $PG_DIR/server.log"
  fi
  wait_until 60 postgres pg_ready || die "PostgreSQL does not answer"
  local app_pw; app_pw=$(cat "$PG_DIR/app.password")
  as_pg "$PG_BIN/psql" -h "$PG_DIR" -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -q <<SQL >/dev/null
SELECT 'role' WHERE false;
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'orchestrator') THEN
    CREATE ROLE orchestrator LOGIN PASSWORD '$app_pw' CREATEDB;
  END IF;
END \$\$;
SQL
  as_pg "$PG_BIN/psql" -h "$PG_DIR" -p "$PG_PORT" -U postgres -d postgres -tAc \
    "SELECT 1 FROM pg_database WHERE datname='orchestrator'" | grep -q 1 \
    || as_pg "$PG_BIN/createdb" -h "$PG_DIR" -p "$PG_PORT" -U postgres -O orchestrator orchestrator
}

postgres_down() {
  if [ -f "$PG_DIR/data/postmaster.pid" ]; then
    log "stopping PostgreSQL"
    as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast -w stop >/dev/null || true
  fi
}

postgres_status() { if pg_ready; then echo "postgres: up on 127.0.0.1:$PG_PORT"; else echo "postgres: down"; fi; }

# ---------------------------------------------------------------- kafka
kafka_install() {
  if [ ! -d "$KAFKA_LIB" ] || [ -z "$(ls -A "$KAFKA_LIB" 2>/dev/null)" ]; then
    command -v mvn >/dev/null || die "Maven is needed to resolve Kafka's jars"
    command -v java >/dev/null || die "Java 17 is needed to run Kafka"
    log "resolving Apache Kafka jars from Maven Central (services/kafka/pom.xml)"
    (cd "$ROOT/services/kafka" && mvn -q -B dependency:copy-dependencies \
       -DoutputDirectory=lib -DincludeScope=runtime) || die "Maven could not resolve Kafka"
  fi
}

kafka_pid() { [ -f "$KAFKA_DIR/pid" ] && cat "$KAFKA_DIR/pid"; }
kafka_running() { pid_is_ours "$(kafka_pid)" "$KAFKA_DIR/server.properties"; }
kafka_answers() { (exec 3<>"/dev/tcp/127.0.0.1/$KAFKA_PORT") 2>/dev/null && grep -q "started" "$KAFKA_DIR/server.log" 2>/dev/null; }

kafka_up() {
  kafka_install
  mkdir -p "$KAFKA_DIR/data"
  cat > "$KAFKA_DIR/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$KAFKA_DIR/data
num.partitions=4
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
log.retention.hours=-1
PROPS
  cat > "$KAFKA_DIR/log4j.properties" <<L4J
log4j.rootLogger=WARN, file
log4j.logger.kafka.server.KafkaServer=INFO
log4j.logger.kafka.server.KafkaRaftServer=INFO
log4j.logger.kafka.server.BrokerServer=INFO
log4j.appender.file=org.apache.log4j.FileAppender
log4j.appender.file.File=$KAFKA_DIR/server.log
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
L4J
  if kafka_running && kafka_answers; then return 0; fi
  if kafka_running; then
    log "Kafka process $(kafka_pid) is running but not answering yet"
  else
    if [ ! -f "$KAFKA_DIR/data/meta.properties" ]; then
      log "formatting Kafka KRaft storage"
      java -cp "$KAFKA_LIB/*" -Dlog4j.configuration="file:$KAFKA_DIR/log4j.properties" \
        kafka.tools.StorageTool format -t "$(java -cp "$KAFKA_LIB/*" kafka.tools.StorageTool random-uuid 2>/dev/null)" \
        -c "$KAFKA_DIR/server.properties" >/dev/null || die "Kafka storage format failed"
    fi
    log "starting Apache Kafka (KRaft) on 127.0.0.1:$KAFKA_PORT"
    : > "$KAFKA_DIR/server.log"
    nohup java -Xms256m -Xmx1g -XX:+UseG1GC -Djava.awt.headless=true \
      -Dlog4j.configuration="file:$KAFKA_DIR/log4j.properties" \
      -cp "$KAFKA_LIB/*" kafka.Kafka "$KAFKA_DIR/server.properties" \
      > "$KAFKA_DIR/stdout.log" 2>&1 < /dev/null &
    echo $! > "$KAFKA_DIR/pid"
  fi
  wait_until 120 kafka kafka_answers || die "Kafka does not answer; see $KAFKA_DIR/server.log"
}

kafka_down() {
  if kafka_running; then stop_pid Kafka "$(kafka_pid)" 60; fi
  rm -f "$KAFKA_DIR/pid"
}

kafka_status() { if kafka_running && kafka_answers; then echo "kafka: up on 127.0.0.1:$KAFKA_PORT (pid $(kafka_pid))"; else echo "kafka: down"; fi; }

# ---------------------------------------------------------------- env file
write_env() {
  mkdir -p "$RUN"
  local app_pw su_pw
  app_pw=$(cat "$PG_DIR/app.password" 2>/dev/null || true)
  su_pw=$(cat "$PG_DIR/superuser.password" 2>/dev/null || true)
  umask 077
  cat > "$ENV_FILE" <<ENV
# Written by scripts/services.sh; local, generated, git-ignored.
ORCH_DATABASE_URL=postgresql://orchestrator:$app_pw@127.0.0.1:$PG_PORT/orchestrator
ORCH_ADMIN_DATABASE_URL=postgresql://postgres:$su_pw@127.0.0.1:$PG_PORT/postgres
ORCH_KAFKA_BOOTSTRAP=127.0.0.1:$KAFKA_PORT
ENV
}

# More services (IM, Rucio) live in scripts/services.d/<name>.sh, each defining
# <name>_up, <name>_down and <name>_status with the helpers above (processes,
# service venvs, PostgreSQL). They are
# started only when named: `scripts/services.sh up im`.
for extra in "$ROOT"/scripts/services.d/*.sh; do
  [ -e "$extra" ] && . "$extra"
done

cmd=${1:-status}; shift || true
targets=("$@"); [ ${#targets[@]} -gt 0 ] || targets=(postgres kafka)
case "$cmd" in
  up)     for t in "${targets[@]}"; do "${t}_up"; done
          [ -n "${ORCH_KAFKA_DIR:-}" ] || write_env
          for t in "${targets[@]}"; do "${t}_status"; done ;;
  down)   for t in "${targets[@]}"; do "${t}_down"; done ;;
  status) for t in "${targets[@]}"; do "${t}_status"; done ;;
  *) die "usage: scripts/services.sh up|status|down [postgres|kafka|im|rucio ...]" ;;
esac
