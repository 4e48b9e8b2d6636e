#!/usr/bin/env bash
# Installs what the real-browser tests (tests/browser) need: Debian's chromium and the
# playwright Python package (its wheel bundles the node driver; we never run
# `playwright install`, the tests drive /usr/bin/chromium). Safe to run repeatedly.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv_python="${VENV_PYTHON:-$repo_root/.venv/bin/python}"

if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi

if [ -x /usr/bin/chromium ]; then
  echo "chromium: already installed ($(/usr/bin/chromium --version 2>/dev/null || echo unknown version))"
else
  echo "chromium: installing from apt"
  $sudo apt-get update
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends chromium fonts-liberation
fi

if [ ! -x "$venv_python" ]; then
  echo "error: no Python at $venv_python (create the venv or set VENV_PYTHON)" >&2
  exit 1
fi

if "$venv_python" -c "import playwright.sync_api" 2>/dev/null; then
  echo "playwright: already installed ($("$venv_python" -m pip show playwright 2>/dev/null | sed -n 's/^Version: //p'))"
else
  echo "playwright: installing into $venv_python"
  "$venv_python" -m pip install --quiet playwright
fi

# Fail here, not in the tests, if the pieces cannot start.
/usr/bin/chromium --version
"$venv_python" -c "from playwright.sync_api import sync_playwright; print('playwright: import ok')"
