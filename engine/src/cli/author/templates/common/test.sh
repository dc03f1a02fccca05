#!/usr/bin/env bash
# Build the kernel, then run it in firedrill's kernel host against scripted
# answers (`firedrill kernel test`): the same loader, capability checks,
# dry-run interception and limits as a real run; nothing is touched.
#
#   ./test.sh            FIREDRILL=/path/to/firedrill to pick the binary
set -euo pipefail
cd "$(dirname "$0")"
fd=${FIREDRILL:-firedrill}
wasm=$PWD/{{name}}.wasm
./build.sh "$wasm"

echo "== an active unit is left alone"
"$fd" kernel test "$wasm" --input tests/input.json --mode live \
  --mock-exec 'systemctl is-active -- *=>0,active' \
  --expect '{"action": "none"}'

echo "== dry-run: a failed unit's restart is planned, not performed"
"$fd" kernel test "$wasm" --input tests/input.json \
  --mock-exec 'systemctl is-active -- *=>3,failed' \
  --expect '{"action": "restart-planned"}'

echo "== live: a failed unit is restarted, then verified"
# Answers to the same command are used in turn; the last one repeats.
"$fd" kernel test "$wasm" --input tests/input.json --mode live \
  --mock-exec 'systemctl is-active -- *=>3,failed' \
  --mock-exec 'systemctl restart -- *=>0,' \
  --mock-exec 'systemctl is-active -- *=>0,active' \
  --expect '{"action": "restarted", "was_active": false}'

echo "== an input that would smuggle a second command is refused"
if "$fd" kernel test "$wasm" --input-json '{"unit": "nginx; reboot"}' \
     --mock-exec 'systemctl ...=>0,active' >/dev/null; then
  echo "FAILED: the kernel accepted a unit name with a shell separator" >&2
  exit 1
fi

echo "all kernel tests passed"
