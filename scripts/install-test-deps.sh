#!/usr/bin/env bash
# Installs the Debian packages the test suite needs, only where they are missing:
# PostgreSQL (a throwaway server for the store tests), systemd-analyze (unit
# verification), Chromium and its chromedriver (rendering the HTML gallery; `labels
# serve` in a real browser, driven by Selenium), WordNet 3.0 (checking the
# shipped taxonomy against its generator). Needs root and apt-get;
# elsewhere it says what is missing and leaves the tests to skip or fail.
set -euo pipefail

missing=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
[ -f /usr/share/wordnet/data.noun ] || missing+=(wordnet-base)

[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "install-test-deps: missing ${missing[*]} (needs root and apt-get); related tests will not run" >&2
  exit 0
fi
echo "install-test-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
