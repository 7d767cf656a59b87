#!/usr/bin/env bash
# Demo: the simulated SMSC with 100 000 simulated handsets, and the gateway in front of it.
#
#   scripts/demo.sh            # builds (debug), starts both, prints URLs, runs until Ctrl-C
#
# Everything listens on 127.0.0.1 only. State (store, audit log, configs) goes to a temporary
# directory removed at exit. Ports: SMSC 2775, API 8080, metrics 9090 (the example config's);
# override with SMSC_PORT / API_PORT / METRICS_PORT.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

SMSC_PORT="${SMSC_PORT:-2775}"
API_PORT="${API_PORT:-8080}"
METRICS_PORT="${METRICS_PORT:-9090}"
# The population: must match [subscribers.generate] of scripts/gateway.example.toml.
SEED=1
COUNT=100000
BASE=48600000000
SHARE=0.7

echo "building (debug)..."
cargo build -q -p load-tests --bin smsc-sim
cargo build -q -p gateway --bin gateway

work="$(mktemp -d)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Accounts of the example config's other binds; MOs (answers) go to the "gateway" account,
# whose binds belong to operator "red", which owns the population's numbers.
cat > "$work/smsc.toml" <<TOML
mo_account = "gateway"

[[accounts]]
system_id = "gateway2"
password = "secret"

[[accounts]]
system_id = "gateway-blue"
password = "secret"

[population]
time_compression = 1.0
TOML

target="${CARGO_TARGET_DIR:-$root/target}/debug"
"$target/smsc-sim" --listen "127.0.0.1:$SMSC_PORT" --system-id gateway --password secret \
    --population "$COUNT" --applet-share "$SHARE" --seed "$SEED" --msisdn-base "$BASE" \
    --config "$work/smsc.toml" &
pids+=($!)

export GATEWAY_PIN_PEPPER="demo pepper, not for production use"
export GATEWAY_TOKEN_KEYCLOAK="demo-keycloak-token"
export GATEWAY_SMPP_PASSWORD_RED="secret"
"$target/gateway" serve --config scripts/gateway.example.toml \
    --set "api.listen=127.0.0.1:$API_PORT" \
    --set "metrics.listen=127.0.0.1:$METRICS_PORT" \
    --set "store.path=$work/gateway-store.redb" \
    --set "operators[0].binds[0].address=127.0.0.1:$SMSC_PORT" \
    --set "operators[0].binds[1].address=127.0.0.1:$SMSC_PORT" \
    --set "operators[1].binds[0].address=127.0.0.1:$SMSC_PORT" &
pids+=($!)

# Wait for the API (at most ~30 s).
for _ in $(seq 1 60); do
    if curl -sf "http://127.0.0.1:$API_PORT/healthz" >/dev/null 2>&1; then
        break
    fi
    sleep 0.5
done

api="http://127.0.0.1:$API_PORT"
cat <<INFO

Gateway running.
  API:      $api  (token "dev-only-token", client "load-test")
  Ready:    $api/readyz
  Metrics:  http://127.0.0.1:$METRICS_PORT/metrics
  OpenAPI:  $api/openapi.yaml   (docs: docs/api.md, docs/results.md)
  Audit:    $work/gateway-store.audit.jsonl

Try (subscriber 48600000000 + i, i < $COUNT; about 70 % have the SIM applet):
  curl -sS -X POST $api/v1/authorizations \\
    -H 'Authorization: Bearer dev-only-token' -H 'Content-Type: application/json' \\
    -d '{"msisdn": "48600000001", "loa": 2, "client_name": "Demo portal", "binding_message": "K7Q2"}'
  curl -sS "$api/v1/authorizations/<id>?wait=30" -H 'Authorization: Bearer dev-only-token'

Ctrl-C stops both.
INFO

wait -n "${pids[@]}"
