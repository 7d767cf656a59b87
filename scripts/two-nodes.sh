#!/usr/bin/env bash
# Demo: two gateway nodes on one Redis, in front of the simulated SMSC with 100 000 handsets.
# The SMSC hands each answer to any bind of the account, so about half of the answers land on
# the node that did not send the prompt; that node ends the authorization against the shared
# record, and both nodes report the one result.
#
#   scripts/two-nodes.sh          # starts everything, runs a few authorizations, then waits
#   scripts/two-nodes.sh --once   # ... and stops after them
#
# Everything listens on 127.0.0.1 only; state goes to a temporary directory removed at exit.
# Ports: Redis 6390, SMSC 2775, node A API 8080 / metrics 9090, node B API 8081 / metrics 9091
# (override with REDIS_PORT, SMSC_PORT, API_A, API_B, METRICS_A, METRICS_B). Needs
# redis-server (scripts/install-peers.sh installs Debian's).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
once=false
[[ "${1:-}" == "--once" ]] && once=true

REDIS_PORT="${REDIS_PORT:-6390}"
SMSC_PORT="${SMSC_PORT:-2775}"
API_A="${API_A:-8080}"
API_B="${API_B:-8081}"
METRICS_A="${METRICS_A:-9090}"
METRICS_B="${METRICS_B:-9091}"
# The population: must match [subscribers.generate] of scripts/gateway.example.toml.
SEED=1
COUNT=100000
BASE=48600000000
SHARE=0.7

command -v redis-server >/dev/null || { echo "redis-server missing: scripts/install-peers.sh" >&2; exit 1; }
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

redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly yes \
    --appendfsync always --dir "$work" --daemonize no --loglevel warning &
pids+=($!)

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
node() { # name api metrics
    "$target/gateway" serve --config scripts/gateway.example.toml \
        --set "api.listen=127.0.0.1:$2" \
        --set "metrics.listen=127.0.0.1:$3" \
        --set "store.path=$work/node-$1.redb" \
        --set "store.backend=redis" \
        --set "store.url=redis://127.0.0.1:$REDIS_PORT/" \
        --set "store.key_prefix=demo" \
        --set "store.node_id=$1" \
        --set "operators[0].binds[0].address=127.0.0.1:$SMSC_PORT" \
        --set "operators[0].binds[1].address=127.0.0.1:$SMSC_PORT" \
        --set "operators[1].binds[0].address=127.0.0.1:$SMSC_PORT" &
    pids+=($!)
}
sleep 0.5
node a "$API_A" "$METRICS_A"
node b "$API_B" "$METRICS_B"

for api in "$API_A" "$API_B"; do
    for _ in $(seq 1 60); do
        curl -sf "http://127.0.0.1:$api/readyz" >/dev/null 2>&1 && break
        sleep 0.5
    done
    curl -sf "http://127.0.0.1:$api/readyz" >/dev/null || { echo "node on $api not ready" >&2; exit 1; }
done

auth=(-H 'Authorization: Bearer dev-only-token' -H 'Content-Type: application/json')
echo
echo "Six authorizations, three started on each node, each read back on the other node:"
for i in 1 2 3 4 5 6; do
    # Three in a row on one node: the SMSC hands answers to the account's binds in turn, so
    # some of them land on the node that did not prompt.
    if (( i <= 3 )); then start=$API_A; other=$API_B; else start=$API_B; other=$API_A; fi
    msisdn=$((BASE + 1000 + i))
    id=$(curl -sS -X POST "http://127.0.0.1:$start/v1/authorizations" "${auth[@]}" \
        -d "{\"msisdn\": \"+$msisdn\", \"loa\": 2, \"client_name\": \"Two-node demo\", \"expiry_secs\": 30}" \
        | sed -n 's/.*"id":"\([0-9a-f]*\)".*/\1/p')
    [[ -n "$id" ]] || { echo "start $i refused" >&2; exit 1; }
    view=$(curl -sS "http://127.0.0.1:$other/v1/authorizations/$id?wait=60" "${auth[@]}")
    status=$(sed -n 's/.*"status":"\([a-z_]*\)".*/\1/p' <<<"$view")
    echo "  #$i started on :$start, read on :$other: ${status:-pending}"
done
for m in "$METRICS_A" "$METRICS_B"; do
    cross=$(curl -sS "http://127.0.0.1:$m/metrics" | awk '/^gateway_cross_node_answers_total/ {s += $2} END {print s + 0}')
    echo "  node with metrics :$m took $cross answer(s) for the other node's prompts"
done

$once && exit 0
cat <<INFO

Running: node A http://127.0.0.1:$API_A, node B http://127.0.0.1:$API_B (token "dev-only-token"),
Redis 127.0.0.1:$REDIS_PORT (prefix "demo"), SMSC 127.0.0.1:$SMSC_PORT. Ctrl-C stops everything.
INFO
wait -n "${pids[@]}"
