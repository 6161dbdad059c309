#!/usr/bin/env bash
# Builds the real orchent CLI (INDIGO's Go client of the orchestrator) into .run/bin/orchent
# and prints its path. Used by tests/orchent and for trying the API by hand.
#
# orchent's go.mod declares the module as plain `orchent`, so the Go module proxy cannot
# serve it (`go install github.com/indigo-dc/orchent@latest` answers 403); it is built from
# its source at a pinned commit, with its dependencies from the Go module proxy.
#
# Source, first found:
#   ORCHENT_SRC   a checkout or a (bare) git repository of github.com/indigo-dc/orchent
#   a local mirror at ../orchent or /work/.mirror/indigo-dc+orchent/repo (machines without
#                 GitHub access keep one there)
#   otherwise     git clone https://github.com/indigo-dc/orchent
# GOPROXY [https://proxy.golang.org]. Needs Go >= 1.16 (`go` on PATH or /usr/local/go/bin).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
COMMIT=8b802e4c5298d93a556cef74b57b2081263d359e  # v1.2.9 + force delete (#62)
OUT="$ROOT/.run/bin/orchent"

if [[ -x "$OUT" && "$(cat "$OUT.commit" 2>/dev/null)" == "$COMMIT" ]]; then
  echo "$OUT"
  exit 0
fi
export PATH="$PATH:/usr/local/go/bin"
command -v go >/dev/null || { echo "orchent.sh: Go is not installed" >&2; exit 1; }

if [[ -z "${ORCHENT_SRC:-}" ]]; then
  for candidate in "$ROOT/../orchent" /work/.mirror/indigo-dc+orchent/repo; do
    if [[ -e "$candidate" ]]; then ORCHENT_SRC="$candidate"; break; fi
  done
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
SRC="$WORK/src"
mkdir -p "$SRC"
if [[ -n "${ORCHENT_SRC:-}" ]]; then
  if git -C "$ORCHENT_SRC" cat-file -e "$COMMIT^{commit}" 2>/dev/null; then
    git -C "$ORCHENT_SRC" archive "$COMMIT" | tar -x -C "$SRC"
  elif [[ -f "$ORCHENT_SRC/orchent.go" ]]; then
    cp -R "$ORCHENT_SRC/." "$SRC"
  else
    echo "orchent.sh: ORCHENT_SRC=$ORCHENT_SRC has neither commit $COMMIT nor orchent.go" >&2
    exit 1
  fi
else
  git clone --quiet https://github.com/indigo-dc/orchent "$SRC"
  git -C "$SRC" checkout --quiet "$COMMIT"
fi

mkdir -p "$(dirname "$OUT")"
(cd "$SRC" && GOFLAGS=-mod=mod GOPROXY="${GOPROXY:-https://proxy.golang.org}" \
  CGO_ENABLED=0 go build -o "$OUT.tmp" .) >&2
mv "$OUT.tmp" "$OUT"
echo "$COMMIT" > "$OUT.commit"
echo "$OUT"
