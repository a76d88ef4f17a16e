#!/usr/bin/env bash
# The whole test suite: installs the browser the page tests drive (where missing), then runs every
# unit, protocol-vector, end-to-end and browser test. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-test-deps.sh
exec cargo test --workspace --locked "$@"
