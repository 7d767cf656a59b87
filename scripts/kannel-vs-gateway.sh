#!/usr/bin/env bash
# Side by side with what operators use today to push messages: Kannel (Debian's `kannel`,
# bearerbox + smsbox, file store) pushing SMS through its HTTP `sendsms` into the simulated
# SMSC, against our gateway starting authorizations into the same SMSC. Same machine,
# alternating runs, REQUESTS requests from CONNECTIONS keep-alive connections each
# (load-tests' `http-push`).
#
# Figures per run: requests/s answered 2xx, and the server's CPU (user + system, from /proc)
# per 1 000 requests, measured from before the push until its work is done: Kannel's queue
# drained into the SMSC (the SMSC counted every submit); the gateway's authorizations all ended
# (the handsets answer at once: time compression 1000). Kannel does less per request (one
# fire-and-forget submit, no fsync, no answer to wait for); the gateway does a whole
# authorization with a durable store. Medians of ROUNDS, and ours / Kannel.
#
#   scripts/kannel-vs-gateway.sh            # 3 rounds of 20 000 requests, 32 connections
#   ROUNDS=1 REQUESTS=5000 scripts/kannel-vs-gateway.sh
#   STORE_BACKEND=journal COMMIT_INTERVAL_MS=2 scripts/kannel-vs-gateway.sh   # the journal store
#
# Needs Debian's kannel (apt-get install kannel); builds the rest (release). Everything
# listens on loopback and stops when the script ends. Output: a table, and JSON in
# target/kannel-vs-gateway.json.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

ROUNDS="${ROUNDS:-3}"
REQUESTS="${REQUESTS:-20000}"
CONNECTIONS="${CONNECTIONS:-32}"
BASE=48600000000
POPULATION=$((REQUESTS + 1000))
SMSC_PORT="${SMSC_PORT:-27901}"
SMSC_METRICS="${SMSC_METRICS:-27902}"
KANNEL_ADMIN="${KANNEL_ADMIN:-27903}"
KANNEL_BOX="${KANNEL_BOX:-27904}"
KANNEL_SENDSMS="${KANNEL_SENDSMS:-27905}"
GW_API="${GW_API:-27906}"
GW_METRICS="${GW_METRICS:-27907}"
# The gateway's store: embedded (redb) or journal; and its durable commit interval. (Not
# GATEWAY_STORE: the gateway reads GATEWAY_<SECTION>_<KEY> variables as overrides.)
STORE_BACKEND="${STORE_BACKEND:-embedded}"
COMMIT_INTERVAL_MS="${COMMIT_INTERVAL_MS:-5}"

command -v bearerbox >/dev/null && command -v smsbox >/dev/null || {
    echo "Kannel is missing: apt-get install kannel" >&2
    exit 1
}
echo "building (release)..."
cargo build -q --release --locked -p load-tests --bin smsc-sim --bin http-push
cargo build -q --release --locked -p gateway --bin gateway
bin="${CARGO_TARGET_DIR:-$root/target}/release"

work="$(mktemp -d)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    [ -n "${KEEP_WORK:-}" ] && echo "kept $work" >&2 || rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# CPU seconds (user + system) of the given pids, summed.
cpu_of() {
    local total=0 pid
    for pid in "$@"; do
        total=$(awk -v t="$total" '{ s=$0; sub(/.*\) /, "", s); split(s, f, " "); print t + (f[12] + f[13]) / 100 }' "/proc/$pid/stat")
    done
    echo "$total"
}
metric() { # url name: the sum over its label sets
    curl -s "$1" | awk -v n="$2" '$1 == n || index($1, n "{") == 1 { s += $2; seen = 1 }
        END { if (seen) printf "%d\n", s }'
}
wait_port() { # port what
    for _ in $(seq 1 200); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    echo "$2 did not listen on $1" >&2
    exit 1
}

# The SMSC: handsets that answer at once, accounts for the gateway's binds and for Kannel.
cat > "$work/smsc.toml" <<TOML
mo_account = "gateway"
window = 64
[[accounts]]
system_id = "gateway2"
password = "secret"
[[accounts]]
system_id = "gateway-blue"
password = "secret"
[[accounts]]
system_id = "kannel"
password = "secret"
[population]
time_compression = 1000.0
p_ignore = 0.0
p_deny = 0.0
p_wrong_pin = 0.0
TOML
"$bin/smsc-sim" --listen "127.0.0.1:$SMSC_PORT" --system-id gateway --password secret \
    --population "$POPULATION" --applet-share 0.7 --seed 1 --msisdn-base "$BASE" \
    --metrics-listen "127.0.0.1:$SMSC_METRICS" --config "$work/smsc.toml" \
    > "$work/smsc.log" 2>&1 &
pids+=($!)
wait_port "$SMSC_PORT" smsc-sim
smsc_metrics="http://127.0.0.1:$SMSC_METRICS/metrics"

cat > "$work/kannel.conf" <<CONF
group = core
admin-port = $KANNEL_ADMIN
admin-password = bench
smsbox-port = $KANNEL_BOX
box-allow-ip = "127.0.0.1"
log-file = "$work/bearerbox.log"
log-level = 2
store-type = file
store-location = "$work/kannel.store"

group = smsc
smsc = smpp
smsc-id = sim
host = 127.0.0.1
port = $SMSC_PORT
transceiver-mode = true
smsc-username = kannel
smsc-password = secret
system-type = "VMA"
max-pending-submits = 10
log-level = 2

group = smsbox
bearerbox-host = 127.0.0.1
sendsms-port = $KANNEL_SENDSMS
log-file = "$work/smsbox.log"
log-level = 2

group = sendsms-user
username = bench
password = bench
max-messages = 1
CONF

run_kannel() { # round -> "req_per_s cpu_per_1000"
    rm -rf "$work/kannel.store"
    bearerbox -v 2 "$work/kannel.conf" > "$work/bearerbox.out" 2>&1 &
    local bb=$!
    wait_port "$KANNEL_BOX" bearerbox
    smsbox -v 2 "$work/kannel.conf" > "$work/smsbox.out" 2>&1 &
    local sb=$!
    wait_port "$KANNEL_SENDSMS" smsbox
    sleep 1 # the SMPP bind
    local submits_before cpu_before
    submits_before=$(metric "$smsc_metrics" smsc_sim_submits_total)
    cpu_before=$(cpu_of "$bb" "$sb")
    "$bin/http-push" --requests "$REQUESTS" --connections "$CONNECTIONS" --msisdn-base "$BASE" \
        --url "http://127.0.0.1:$KANNEL_SENDSMS/cgi-bin/sendsms?username=bench&password=bench&from=4800&to={i}&text=Your+code+is+1234" \
        > "$work/push.json"
    # Done when the SMSC has every message.
    local want=$((submits_before + REQUESTS)) now
    for _ in $(seq 1 600); do
        now=$(metric "$smsc_metrics" smsc_sim_submits_total)
        [ "${now%.*}" -ge "$want" ] && break
        sleep 0.1
    done
    local cpu_after
    cpu_after=$(cpu_of "$bb" "$sb")
    kill "$sb" "$bb"; wait "$sb" "$bb" 2>/dev/null || true
    python3 - "$work/push.json" "$cpu_before" "$cpu_after" "$REQUESTS" "${now%.*}" "$want" <<'PY'
import json, sys
push = json.load(open(sys.argv[1]))
cpu = float(sys.argv[3]) - float(sys.argv[2])
done = int(sys.argv[5]) >= int(sys.argv[6])
print(push["ok_per_s"], round(cpu * 1000 / int(sys.argv[4]), 3), push["ok"], "drained" if done else "NOT-DRAINED")
PY
}

run_gateway() { # round -> "req_per_s cpu_per_1000"
    local dir="$work/gw"
    rm -rf "$dir"; mkdir -p "$dir"
    GATEWAY_PIN_PEPPER="bench pepper, not for production use" \
    GATEWAY_TOKEN_KEYCLOAK="bench-keycloak-token" \
    GATEWAY_SMPP_PASSWORD_RED="secret" \
    "$bin/gateway" serve --config scripts/gateway.example.toml \
        --set "api.listen=127.0.0.1:$GW_API" \
        --set "metrics.listen=127.0.0.1:$GW_METRICS" \
        --set "store.backend=$STORE_BACKEND" \
        --set "store.path=$dir/store.$STORE_BACKEND" \
        --set "store.durable_commit_interval_ms=$COMMIT_INTERVAL_MS" \
        --set "subscribers.generate.count=$POPULATION" \
        --set "api.clients[1].rate_limit_per_sec=1000000" \
        --set "api.clients[1].rate_limit_burst=1000000" \
        --set "operators[0].binds[0].address=127.0.0.1:$SMSC_PORT" \
        --set "operators[0].binds[1].address=127.0.0.1:$SMSC_PORT" \
        --set "operators[1].binds[0].address=127.0.0.1:$SMSC_PORT" \
        --set "log.filter=warn" \
        > "$dir/gateway.log" 2>&1 &
    local gw=$!
    wait_port "$GW_API" gateway
    for _ in $(seq 1 100); do
        curl -sf "http://127.0.0.1:$GW_API/readyz" >/dev/null && break
        sleep 0.1
    done
    local cpu_before
    cpu_before=$(cpu_of "$gw")
    "$bin/http-push" --requests "$REQUESTS" --connections "$CONNECTIONS" --msisdn-base "$BASE" \
        --method POST --url "http://127.0.0.1:$GW_API/v1/authorizations" \
        --header "authorization: Bearer dev-only-token" --header "content-type: application/json" \
        --body '{"msisdn":"+{i}","loa":2,"client_name":"Bench Bank","expiry_secs":30}' \
        > "$work/push.json"
    # Done when no authorization is in flight.
    local left=1
    for _ in $(seq 1 600); do
        left=$(metric "http://127.0.0.1:$GW_METRICS/metrics" gateway_authorizations_in_flight)
        [ "${left%.*}" = "0" ] && break
        sleep 0.1
    done
    local cpu_after
    cpu_after=$(cpu_of "$gw")
    kill "$gw"; wait "$gw" 2>/dev/null || true
    python3 - "$work/push.json" "$cpu_before" "$cpu_after" "$REQUESTS" "${left%.*}" <<'PY'
import json, sys
push = json.load(open(sys.argv[1]))
cpu = float(sys.argv[3]) - float(sys.argv[2])
print(push["ok_per_s"], round(cpu * 1000 / int(sys.argv[4]), 3), push["ok"], "drained" if sys.argv[5] == "0" else "NOT-DRAINED")
PY
}

results="$work/results.txt"
: > "$results"
for round in $(seq 1 "$ROUNDS"); do
    k=$(run_kannel "$round"); echo "kannel $round $k" | tee -a "$results"
    g=$(run_gateway "$round"); echo "gateway $round $g" | tee -a "$results"
done

out="${CARGO_TARGET_DIR:-$root/target}/kannel-vs-gateway.json"
python3 - "$results" "$out" "$REQUESTS" "$CONNECTIONS" <<'PY'
import json, statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
def med(who, col):
    return statistics.median(float(r[col]) for r in rows if r[0] == who)
k_rate, g_rate = med("kannel", 2), med("gateway", 2)
k_cpu, g_cpu = med("kannel", 3), med("gateway", 3)
summary = {
    "requests": int(sys.argv[3]), "connections": int(sys.argv[4]),
    "runs": [{"who": r[0], "round": int(r[1]), "ok_per_s": float(r[2]),
              "cpu_s_per_1000": float(r[3]), "ok": int(r[4]), "drained": r[5] == "drained"}
             for r in rows],
    "kannel": {"ok_per_s": k_rate, "cpu_s_per_1000": k_cpu},
    "gateway": {"ok_per_s": g_rate, "cpu_s_per_1000": g_cpu},
    "ours_over_kannel": {"rate": round(g_rate / k_rate, 3), "cpu_per_request": round(g_cpu / k_cpu, 3)},
}
json.dump(summary, open(sys.argv[2], "w"), indent=2)
print()
print(f"{'':10} {'requests/s':>12} {'CPU s / 1000':>14}   (medians of {len(rows) // 2})")
print(f"{'Kannel':10} {k_rate:12.1f} {k_cpu:14.3f}")
print(f"{'gateway':10} {g_rate:12.1f} {g_cpu:14.3f}")
print(f"{'ours/Kannel':10} {g_rate / k_rate:12.2f} {g_cpu / k_cpu:14.2f}")
print(f"JSON: {sys.argv[2]}")
PY
