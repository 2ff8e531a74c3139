#!/usr/bin/env bash
# Make sure Debian's headless-capable Chromium and its WebDriver are available for the browser
# test (tests/e2e/test_web.py). Installs the chromium and chromium-driver packages when missing.
set -euo pipefail
have() { [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; }
if have; then
  exit 0
fi
echo "Chromium or chromedriver not found; installing Debian's chromium and chromium-driver" >&2
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
have || { echo "could not install chromium and chromium-driver" >&2; exit 1; }
