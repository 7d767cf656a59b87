#!/usr/bin/env bash
# Installs the real SMPP implementations (written by others) that the interop tests run against:
# - the npm package `smpp` (node-smpp), as an SMSC for the gateway's ESME;
# - the PyPI package `smpplib`, as an ESME for our simulated SMSC;
# - the PyPI package `cryptography`, for scripts/check-applet-vectors.py (the applet's worked
#   examples rebuilt by an independent implementation).
# Everything is pinned and installed inside the repository (node_modules, scripts/.deps).
set -euo pipefail
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1 || { echo "missing required tool: $1" >&2; exit 1; }; }

for dir in gateway/tests/peers/node load-tests/tests/peers/node; do
  if [ -f "$dir/package.json" ]; then
    need npm
    echo "npm install in $dir"
    if [ -f "$dir/package-lock.json" ]; then
      (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
    else
      (cd "$dir" && npm install --no-audit --no-fund --loglevel=error)
    fi
  fi
done

req=load-tests/tests/peers/python/requirements.txt
if [ -f "$req" ]; then
  need python3
  echo "pip install -r $req"
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -r "$req"
fi

# --- Prometheus (metrics tests) --------------------------------------------------------------
# gateway/tests/metrics_exposition.rs runs `promtool`; load-tests/tests/prometheus_scrape.rs
# starts its own `prometheus` on loopback (temporary config and data directory). Debian's
# package provides both; the system service it ships is not started here (CI runs as root in a
# container; the tests never use it).
if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
  need apt-get
  echo "apt-get install prometheus"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y --no-install-recommends prometheus
  # Some images start services from postinst; stop it so it does not hold :9090.
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then
    systemctl stop prometheus || true
  fi
fi

# --- Chromium (the HTML report is opened in a real headless browser) ------------------------
# load-tests/tests/surge_small.rs writes `surge --html` and opens it with Debian's chromium.
if ! command -v chromium >/dev/null 2>&1; then
  need apt-get
  echo "apt-get install chromium"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y --no-install-recommends chromium
fi

# --- Redis (the shared store of several gateway nodes) ---------------------------------------
# The Redis store's conformance tests and the multi-node tests start their own redis-server on a
# free loopback port with their own data directory; Debian's package provides the binary (7.0).
# The system service it may start is stopped so nothing else listens for it.
if ! command -v redis-server >/dev/null 2>&1; then
  need apt-get
  echo "apt-get install redis-server"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y --no-install-recommends redis-server
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet redis-server 2>/dev/null; then
    systemctl stop redis-server || true
  fi
fi
