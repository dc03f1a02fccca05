#!/usr/bin/env bash
# Build this kernel into a WebAssembly component (needs the wasm32-wasip2
# target: `rustup target add wasm32-wasip2`).
#
#   ./build.sh [OUT.wasm]        default: <directory name>.wasm
set -euo pipefail
cd "$(dirname "$0")"
out=$(realpath -m "${1:-$(basename "$PWD").wasm}")
cargo build --quiet --release --target wasm32-wasip2
cp "${CARGO_TARGET_DIR:-target}/wasm32-wasip2/release/{{crate}}.wasm" "$out"
