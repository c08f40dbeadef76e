#!/bin/sh
# Installs Chromium for the browser tests (tests/app/test_browser.py) when it is not there yet.
# Playwright (requirements-dev.txt) drives this system binary; `playwright install` is not used.
# Used by the README's test command and .ci/run. Without apt-get it only says what is missing:
# the browser tests then skip with that reason and everything else still runs.
set -e
for name in chromium chromium-browser; do
    if command -v "$name" >/dev/null 2>&1; then
        exit 0
    fi
done
if [ -n "${CHROMIUM:-}" ] && [ -x "$CHROMIUM" ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_browser.sh: no apt-get here; install Chromium yourself (or set \$CHROMIUM) for the browser tests" >&2
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
echo "install_browser.sh: installing chromium with apt-get" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
