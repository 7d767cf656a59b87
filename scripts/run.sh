#!/usr/bin/env bash
# The main job: the whole system end to end on this machine, nothing to install.
#
# Replays 1 % of the renewal day of 31 October 2023 (hours 06-24, 7 879 authorizations offered)
# compressed x1000 (about 65 s), in one process on loopback: the gateway (north API, sessions,
# embedded store, SMPP binds), the simulated SMSC and its population of handsets, SIM applets
# and users (think times compressed too). LoA3 for subscribers without the applet goes over USSD
# with the PIN verified by the gateway. Prints the report; writes target/surge.json and
# target/surge.svg. Extra arguments go to `surge` (see docs/load-testing.md).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked -p load-tests --bin surge
exec target/release/surge \
  --scale 0.01 --compress 1000 --window-hours 6-24 \
  --compress-think --expiry-secs 30 --loa3-over-ussd \
  --json target/surge.json --plot target/surge.svg \
  "$@"
