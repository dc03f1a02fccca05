#!/usr/bin/env bash
# Build this kernel into a WebAssembly component with componentize-py (from
# PyPI, pinned in requirements.txt; installed into a virtualenv on first use).
#
#   ./build.sh [OUT.wasm]        default: <directory name>.wasm
#
# FIREDRILL_PY_VENV picks the virtualenv (default .venv here).
set -euo pipefail
cd "$(dirname "$0")"
out=$(realpath -m "${1:-$(basename "$PWD").wasm}")
venv=${FIREDRILL_PY_VENV:-.venv}
if ! cmp -s requirements.txt "$venv/.requirements" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r requirements.txt
  cp requirements.txt "$venv/.requirements"
fi
PYTHONDONTWRITEBYTECODE=1 "$venv/bin/componentize-py" -d wit -w kernel componentize app -o "$out"
