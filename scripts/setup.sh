#!/usr/bin/env bash
# Idempotent set-up for a fresh machine: Python virtual environment with the
# pinned dependencies, Java and Maven for Kafka, then the local services.
# Called by scripts/run.sh and scripts/test.sh; safe to run any number of times.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
log() { printf '[setup] %s\n' "$*" >&2; }

PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
"$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' \
  || { echo "Python 3.11 is required" >&2; exit 1; }

apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  [ -f "$ROOT/.run/apt-updated" ] || { apt-get update -qq; mkdir -p "$ROOT/.run"; touch "$ROOT/.run/apt-updated"; }
  apt-get install -y -qq "$@" >/dev/null
}
command -v java >/dev/null || { log "installing Java 17"; apt_install openjdk-17-jre-headless; }
command -v mvn >/dev/null || { log "installing Maven"; apt_install maven; }

if [ ! -x .venv/bin/python ]; then
  log "creating the virtual environment .venv"
  "$PYTHON" -m venv .venv
fi
stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  log "installing pinned Python dependencies"
  .venv/bin/pip install -q --upgrade pip >/dev/null
  .venv/bin/pip install -q -e '.[test]'
  rm -f .venv/.installed-*; touch "$stamp"
fi

bash scripts/services.sh up "$@"
