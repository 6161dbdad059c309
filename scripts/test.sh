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
echo "== orchent (the real Go client, for tests/orchent)"
extra=()
if ! bash scripts/orchent.sh >/dev/null; then
  # orchent's source is only on GitHub (its module path cannot be served by the Go proxy):
  # without GitHub, ORCHENT_SRC or a local mirror it cannot be built. Said loudly, not hidden.
  echo "!! orchent could not be built: tests/orchent/test_orchent.py NOT run" \
       "(set ORCHENT_SRC to an orchent checkout to run them)" >&2
  extra=(--deselect tests/orchent/test_orchent.py)
fi
echo "== pytest"
set +e
.venv/bin/pytest -p no:cacheprovider "${extra[@]}" "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi
exit "$status"
