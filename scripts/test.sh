#!/usr/bin/env bash
# The whole test suite: installs the real protocol peers the tests talk to, then runs the
# formatting and lint gates and every test of the workspace. Safe to run repeatedly.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

say() { printf '\n== %s\n' "$*"; }

say "Installing test peers"
scripts/install-peers.sh

say "Applet worked examples checked by an independent implementation (Python cryptography)"
python3 scripts/check-applet-vectors.py

say "Architecture check: sim-applet-model stays sans-IO (no tokio)"
# The tree is taken first, so a failing `cargo tree` fails the check instead of passing it.
tree=$(cargo tree -p sim-applet-model -e normal --prefix none --locked)
if ! grep -q '^sim-applet-model ' <<<"$tree"; then
  echo "cargo tree printed no sim-applet-model: the check cannot run" >&2
  exit 1
fi
if grep -E '^(tokio|tokio-util|mio|async-std) ' <<<"$tree"; then
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
