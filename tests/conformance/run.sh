#!/usr/bin/env bash
# The conformance suite: drives each sandbox mock with client libraries nobody on the project
# wrote, at pinned versions installed here: tests/conformance/.venv from requirements.txt, and
# tests/conformance/node_modules from package-lock.json (npm ci).
# Starts `paymux up` on free ports with temporary data dirs, runs every client, prints one line
# per check and closes with `N passed, M failed`; exits non-zero on any failure.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$here"

if [ ! -x .venv/bin/python ] || ! cmp -s requirements.txt .venv/installed.txt; then
  rm -rf .venv
  python3 -m venv .venv || exit 1
  .venv/bin/pip install -q --disable-pip-version-check -r requirements.txt || exit 1
  cp requirements.txt .venv/installed.txt
fi

if [ ! -d node_modules/alipay-sdk ] || ! cmp -s package-lock.json node_modules/.package-lock.json.installed; then
  npm ci --silent --no-audit --no-fund || exit 1
  cp package-lock.json node_modules/.package-lock.json.installed
fi

cargo build -q --locked -p paymux-cli --manifest-path "$root/Cargo.toml" || exit 1
bin="${CARGO_TARGET_DIR:-$root/target}/debug/paymux"

work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

# Starts `paymux up` with a data dir under $work/$1 and extra arguments; waits for sandbox.json.
up() {
  local name="$1"; shift
  mkdir -p "$work/$name"
  "$bin" up --data-dir "$work/$name" --gateway-port 0 --alipay-port 0 --wechat-port 0 \
    --unionpay-port 0 "$@" >"$work/$name.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 300); do
    if grep -q "paymux sandbox is up" "$work/$name.log" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "FAIL setup: paymux up ($name) did not come up:"; cat "$work/$name.log"
  return 1
}

up both --wechat-key-mode both || exit 1
up cert --wechat-key-mode certificate || exit 1

out="$work/results.txt"
run() { "$@" 2>&1 | tee -a "$out"; }
# The SDK stamps requests with the machine's local time; Alipay wants Beijing time, so a merchant
# runs it in that zone (in UTC every call is refused with isv.invalid-timestamp, as by Alipay).
run env TZ=Asia/Shanghai node alipay.mjs "$work/both/sandbox.json"
run .venv/bin/python wechat_v3.py "$work/both/sandbox.json" public-key
run .venv/bin/python wechat_v3.py "$work/cert/sandbox.json" certificate
run .venv/bin/python unionpay_acp.py "$work/both/sandbox.json"

passed=$(grep -c '^PASS ' "$out")
failed=$(grep -c '^FAIL ' "$out")
# A client that died before its summary counts as a failure.
clients=$(grep -cE '^[a-z].*: [0-9]+ passed, [0-9]+ failed$' "$out")
expected=4
[ "$clients" -eq "$expected" ] || failed=$((failed + expected - clients))
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
