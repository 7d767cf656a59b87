#!/usr/bin/env bash
# The whole test suite: installs the real protocol peers the tests talk to, then runs the
# formatting and lint gates and every test of the workspace. Safe to run repeatedly.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

say() { printf '\n== %s\n' "$*"; }

say "Installing test peers"
scripts/install-peers.sh

say "Architecture check: sim-applet-model stays sans-IO (no tokio)"
if cargo tree -p sim-applet-model -e normal --prefix none | grep -E '^(tokio|mio|async-std) ' ; then
  echo "sim-applet-model must not depend on an async runtime" >&2
  exit 1
fi

say "cargo fmt --check"
cargo fmt --all -- --check

say "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

say "Fuzz targets build (they run by hand: see sim-applet-model/fuzz/README.md)"
cargo check --quiet --manifest-path sim-applet-model/fuzz/Cargo.toml --locked

say "cargo test"
export PATH="$root/scripts/.deps/bin:$PATH"
cargo test --workspace --locked

say "All tests passed"
