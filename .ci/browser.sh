#!/usr/bin/env bash
# Makes sure Debian's Chromium and chromedriver are installed for the browser test
# (tests/browser.rs). Installs them when missing; if that is impossible (no apt, no root, no
# network) it says so and the browser test skips with the same reason. Idempotent.
set -uo pipefail

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi; }

if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  exit 0
fi
echo "browser: installing chromium and chromium-driver (Debian packages)"
if ! { as_root apt-get update -qq &&
       as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }; then
  echo "browser: WARNING: could not install Chromium; the browser test will be skipped" >&2
fi
exit 0
