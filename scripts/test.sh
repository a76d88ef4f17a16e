#!/usr/bin/env bash
# The whole test suite: installs the browser the page tests drive (where missing), starts the local
# PostgreSQL if it is down, then runs every unit, protocol-vector, end-to-end and browser test (the
# store suite on both backends), and the end-to-end suites a second time on PostgreSQL. Extra
# arguments go to the first `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-test-deps.sh
# The store suite runs every test on PostgreSQL too, and fails (never skips) without it.
if ! pg_isready -q -h 127.0.0.1; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
fi
cargo test --workspace --locked "$@"
# The end-to-end suites again, each test on a fresh PostgreSQL database of its own (dropped after).
# The payer's browser tests drive pages, not the store, and run once; the admin page's test reads
# the store across merchants (its own queries on each backend), so it runs here too.
PAYMUX_E2E_DATABASE=postgres cargo test --locked -p paymux-e2e \
    --test alipay --test wechat --test unionpay --test reliability --test recovery \
    --test livemode --test shutdown --test metrics --test admin --test barcode --test attempts \
    --test settlement
