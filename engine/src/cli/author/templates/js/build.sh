#!/usr/bin/env bash
# Build this kernel into a WebAssembly component with componentize-js (from
# npm, pinned in package-lock.json; installed on first use).
#
#   ./build.sh [OUT.wasm]        default: <directory name>.wasm
set -euo pipefail
cd "$(dirname "$0")"
out=$(realpath -m "${1:-$(basename "$PWD").wasm}")
if ! cmp -s package-lock.json node_modules/.firedrill-lock 2>/dev/null; then
  # `npm ci` refuses this lock file (npm drops optional per-platform entries);
  # `npm install` installs the versions the lock file pins.
  npm install --no-audit --no-fund --loglevel=error
  cp package-lock.json node_modules/.firedrill-lock
fi
# (--preserve-symlinks-main: resolve packages from here even if build.mjs is a link)
FIREDRILL_WIT=wit OUT="$out" node --preserve-symlinks-main build.mjs
