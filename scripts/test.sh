#!/usr/bin/env bash
# Runs the whole test suite against the real PostgreSQL and Kafka it starts,
# after the linters and the strict type check. Fails on any failure, and also
# when pytest collects no test (its exit code 5).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
echo "== ruff"
.venv/bin/ruff check .
echo "== mypy (strict for domain/ and eventstore/)"
.venv/bin/mypy domain eventstore
echo "== pytest"
set +e
.venv/bin/pytest -p no:cacheprovider "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi
exit "$status"
