#!/usr/bin/env bash
# A CPS cluster on this machine: a 3-member etcd and 3 cps-server nodes on
# loopback, logs and data in a temporary folder, everything stopped on
# Ctrl-C (or SIGTERM). `make cluster` runs it.
#
#   nodes  127.0.0.1:50051, 127.0.0.1:50052, 127.0.0.1:50053
#   etcd   127.0.0.1:2379, 127.0.0.1:12379, 127.0.0.1:22379
#
# Environment: CPS_BASE_PORT (50051), ETCD_BASE_PORT (2379), CLUSTER_DIR
# (a new temporary folder), BIN (.venv/bin).
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-.venv/bin}
ETCD=${ETCD:-etcd}
CPS_BASE_PORT=${CPS_BASE_PORT:-50051}
ETCD_BASE_PORT=${ETCD_BASE_PORT:-2379}
CLUSTER_DIR=${CLUSTER_DIR:-$(mktemp -d -t cps-cluster-XXXXXX)}
command -v "$ETCD" >/dev/null || { echo "local-cluster: no etcd (apt-get install etcd-server)" >&2; exit 1; }

pids=()
cps_pids=()
stop() {
    trap - INT TERM EXIT
    echo "local-cluster: stopping"
    # The nodes first (they hand their checkpoints over through etcd), then etcd.
    for pid in "${cps_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${cps_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    # etcd's data is temporary: no need for its slow clean stop.
    for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    echo "local-cluster: stopped (logs in $CLUSTER_DIR)"
    exit 0
}
trap stop INT TERM EXIT

initial=""
for i in 0 1 2; do
    peer=$((ETCD_BASE_PORT + 1 + i * 10000))
    initial+="${initial:+,}e$i=http://127.0.0.1:$peer"
done
endpoints=""
for i in 0 1 2; do
    client=$((ETCD_BASE_PORT + i * 10000))
    peer=$((client + 1))
    endpoints+="${endpoints:+,}127.0.0.1:$client"
    "$ETCD" --name "e$i" --data-dir "$CLUSTER_DIR/etcd-$i" \
        --listen-client-urls "http://127.0.0.1:$client" \
        --advertise-client-urls "http://127.0.0.1:$client" \
        --listen-peer-urls "http://127.0.0.1:$peer" \
        --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
        --initial-cluster "$initial" --initial-cluster-state new \
        --initial-cluster-token cps-local >"$CLUSTER_DIR/etcd-$i.log" 2>&1 &
    pids+=($!)
done

# The nodes know each other by a shared secret (plaintext on loopback;
# docs/security.md has TLS).
secret="$CLUSTER_DIR/cluster-secret"
(umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$secret")

for i in 0 1 2; do
    port=$((CPS_BASE_PORT + i))
    "$BIN/cps-server" --listen "127.0.0.1:$port" --node-name "n$i" \
        --data-dir "$CLUSTER_DIR/cps-$i" --etcd-endpoints "$endpoints" \
        --cluster-name local --cluster-secret-file "$secret" --grace-seconds 2 >"$CLUSTER_DIR/cps-$i.log" 2>&1 &
    pids+=($!)
    cps_pids+=($!)
done

echo "local-cluster: etcd $endpoints"
echo "local-cluster: nodes 127.0.0.1:$CPS_BASE_PORT,127.0.0.1:$((CPS_BASE_PORT + 1)),127.0.0.1:$((CPS_BASE_PORT + 2))"
echo "local-cluster: logs in $CLUSTER_DIR; Ctrl-C stops everything"
# Until we are told to stop. A process that ends (a node killed to watch a
# failover, say) is reported and the others go on.
declare -A reported=()
while true; do
    alive=0
    for pid in "${pids[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            alive=$((alive + 1))
        elif [[ -z ${reported[$pid]:-} ]]; then
            reported[$pid]=1
            echo "local-cluster: process $pid ended; the others go on (logs in $CLUSTER_DIR)" >&2
        fi
    done
    if [ "$alive" -eq 0 ]; then
        echo "local-cluster: every process ended" >&2
        exit 1
    fi
    sleep 1 &
    wait $! || true
done
