#!/usr/bin/env bash
# Runs the whole system on this machine: services, migrations, then every
# component (API, relay, projections, handlers) in one process with demo data.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
exec .venv/bin/orchestrator run --demo-data "$@"
