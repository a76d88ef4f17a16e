#!/usr/bin/env bash
# The whole test suite: installs the browser the page tests drive (where missing), then runs every
# unit, protocol-vector, end-to-end and browser test, and starts the local PostgreSQL the store
# suite needs if it is down. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-test-deps.sh
# The store suite runs every test on PostgreSQL too, and fails (never skips) without it.
if ! pg_isready -q -h 127.0.0.1; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
fi
exec cargo test --workspace --locked "$@"
