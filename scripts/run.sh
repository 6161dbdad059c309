#!/usr/bin/env bash
# Runs the whole system on this machine: services (PostgreSQL, Kafka, and the local IM with
# its Dummy connector), migrations, then every component (API, relay, projections, handlers)
# in one process, with demo data: a demo site the demo groups may use, deployed for real
# through IM's Dummy connector, and a few deployments.
#
# For local use with curl it also starts the development OIDC issuer on loopback
# (ORCH_DEV_ISSUER=0 turns it off; it is never on outside this script):
#   TOKEN=$(.venv/bin/orchestrator dev-token --sub alice --groups demo-group)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh postgres kafka im
export ORCH_DEV_ISSUER="${ORCH_DEV_ISSUER:-1}"
if [ -z "${ORCH_SITES_FILE:-}" ]; then
  .venv/bin/python -m orchestrator.demo sites-file .run/demo-sites.json
  export ORCH_SITES_FILE="$ROOT/.run/demo-sites.json"
fi
exec .venv/bin/orchestrator run --demo-data "$@"
