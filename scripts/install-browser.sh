#!/usr/bin/env bash
# Debian's Chromium and ChromeDriver, which the web page's browser test drives (tests/serving/test_server.py).
# `make test` runs this: it installs them when they are missing on a Debian-like machine where it runs as root;
# elsewhere it says so, and that one test is skipped.
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing Debian's chromium and chromium-driver for the browser test" >&2
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      chromium chromium-driver >/dev/null; }; then
    echo "could not install chromium (see above): the browser test will be skipped" >&2
  fi
else
  echo "chromium/chromedriver are missing and need root with apt-get to install: the browser test will be skipped" >&2
fi
