#!/usr/bin/env bash
# Installs what the test suite needs beyond Rust: Debian's chromium and chromium-driver, for the
# browser tests of the pages a person uses. Idempotent; nothing is downloaded outside apt.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install chromium and chromedriver (or set PAYMUX_CHROMIUM and PAYMUX_CHROMEDRIVER)" >&2
  exit 1
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium chromium-driver >/dev/null
