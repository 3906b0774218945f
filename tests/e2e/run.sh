#!/usr/bin/env bash
# Runs the end-to-end suite (official openai and anthropic SDKs against a real gateway).
#   VENV     virtualenv to create/use (default: .venv at the repo root)
#   ASC_BIN  the asc binary (default: target/debug/asc; build it with `cargo build -p asc`)
# Extra arguments are passed to pytest. Exits with pytest's code.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

VENV="${VENV:-$ROOT/.venv}"
REQ="$ROOT/tests/e2e/requirements.txt"
PY="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi

# Install only when the requirements changed since the last install into this venv.
STAMP="$VENV/.asc-e2e-requirements"
if [ ! -f "$STAMP" ] || ! cmp -s "$REQ" "$STAMP"; then
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQ"
    cp "$REQ" "$STAMP"
fi

set +e
"$VENV/bin/python" -m pytest tests/e2e -q "$@"
code=$?
set -e
exit "$code"
