#!/usr/bin/env bash
# Start or stop a real Ray cluster of N nodes on this machine, to try and test `--engine ray
# --ray-address` against an existing multi-node cluster (tests/test_engine_ray_cluster.py).
#
#   bash scripts/ray-cluster.sh start [--nodes N] [--port P] [--cpus C] [--dir DIR]
#   bash scripts/ray-cluster.sh status [--port P] [--dir DIR]  # prints its alive nodes
#   bash scripts/ray-cluster.sh stop  [--port P] [--dir DIR]
#
# `start` runs what a user runs on each machine of a cluster: `ray start --head` on port P
# (default $RAY_PORT or 6379), then N-1 (default 1 more) `ray start --address 127.0.0.1:P`,
# each node a separate set of processes with C CPUs (default 1) and its own Ray temp dir
# DIR/node-I (default DIR /tmp/fraudseq-ray-P; keep it short: Ray's socket paths must fit in
# 107 bytes). Each node runs as `ray start --block` in its own session, so that `stop` ends
# exactly this cluster's processes by their process group (never `ray stop`, which ends
# every Ray on the machine). It waits until the cluster has N alive nodes, then prints the
# address (127.0.0.1:P) as the last line of stdout.
#
# The cluster uses Ray's token authentication with a token of its own (DIR/auth_token, made
# by `start`, removed by `stop`). A client needs it: `source DIR/client.env` first (it sets
# RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH). The object store of each node is
# $RAY_OBJECT_STORE_MEMORY bytes (default 200 MB). Ray workers import fraudseq as the node
# does: set PYTHONPATH before `start` to test a checkout that is not installed.
#
# A node that exits while it starts (Ray gives a raylet 30 s to register, which a loaded
# machine can miss) is started again, up to $RAY_CLUSTER_ATTEMPTS (5) times.
#
# `stop` sends SIGTERM to each node's `ray start` (workers first), which stops the node's
# processes; whatever of a node's process group is left after 30 s gets SIGKILL.
set -euo pipefail

usage() {
    sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

[ $# -ge 1 ] || usage
ACTION="$1"
shift
NODES=2
PORT="${RAY_PORT:-6379}"
CPUS=1
DIR=""
while [ $# -gt 0 ]; do
    case "$1" in
        --nodes) NODES="$2"; shift 2 ;;
        --port) PORT="$2"; shift 2 ;;
        --cpus) CPUS="$2"; shift 2 ;;
        --dir) DIR="$2"; shift 2 ;;
        *) echo "ray-cluster.sh: unknown option $1" >&2; usage ;;
    esac
done
DIR="${DIR:-/tmp/fraudseq-ray-$PORT}"
PIDS="$DIR/pids"
ADDRESS="127.0.0.1:$PORT"
RAY="${RAY:-$(command -v ray || true)}"
if [ -z "$RAY" ]; then
    RAY="$(dirname "$(command -v python3)")/ray"
fi

# Every node, and `ray status` here: this cluster's token; no drain wait on SIGTERM.
export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH="$DIR/auth_token"
export RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S=0 RAY_USAGE_STATS_ENABLED=0

alive() { kill -0 -- "-$1" 2>/dev/null; }  # any process left in node $1's process group

stop_node() {
    local pid="$1" waited=0
    kill -TERM "$pid" 2>/dev/null || true
    while alive "$pid" && [ "$waited" -lt 300 ]; do
        sleep 0.1
        waited=$((waited + 1))
    done
    if alive "$pid"; then
        echo "ray-cluster.sh: node $pid did not stop in 30 s; killing its process group" >&2
        kill -KILL -- "-$pid" 2>/dev/null || true
    fi
}

# the number of alive nodes `ray status` lists (0 until the head answers)
nodes_up() {
    "$RAY" status --address "$ADDRESS" 2>/dev/null \
        | awk '/^Active:/ {on = 1; next} /^[A-Z]/ {on = 0} on && /node_/ {n++} END {print n + 0}'
}

if [ "$ACTION" = "status" ]; then
    nodes_up
    exit 0
fi

if [ "$ACTION" = "stop" ]; then
    if [ -f "$PIDS" ]; then
        # workers first, then the head
        for pid in $(tac "$PIDS"); do
            stop_node "$pid"
        done
        echo "stopped the Ray cluster at $ADDRESS ($(wc -l <"$PIDS") nodes)" >&2
        rm -f "$PIDS"
    fi
    rm -rf "$DIR"/node-[0-9]* "$DIR/auth_token" "$DIR/client.env"
    rmdir "$DIR" 2>/dev/null || true
    exit 0
fi
[ "$ACTION" = "start" ] || usage

if [ -f "$PIDS" ]; then
    for pid in $(cat "$PIDS"); do
        if alive "$pid"; then
            echo "ray-cluster.sh: a cluster from $DIR is still running (pid $pid): stop it" \
                 "first: bash $0 stop --port $PORT --dir $DIR" >&2
            exit 1
        fi
    done
    rm -f "$PIDS"
fi
if [ ! -x "$RAY" ]; then
    echo "ray-cluster.sh: no ray command; install it: pip install 'fraudseq[ray]'" >&2
    exit 1
fi
if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
    echo "ray-cluster.sh: port $PORT is in use; give another with --port" >&2
    exit 1
fi

mkdir -p "$DIR"
(umask 077 && od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$RAY_AUTH_TOKEN_PATH")
printf 'export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=%q\n' "$RAY_AUTH_TOKEN_PATH" \
    >"$DIR/client.env"
: >"$PIDS"

OBJECT_STORE="${RAY_OBJECT_STORE_MEMORY:-200000000}"
COMMON=(--block --num-cpus "$CPUS" --object-store-memory "$OBJECT_STORE" --disable-usage-stats)

fail() {
    echo "ray-cluster.sh: $1; the last lines of its log ($2):" >&2
    tail -n 20 "$2" >&2 || true
    bash "$0" stop --port "$PORT" --dir "$DIR"
    exit 1
}

# Start node $1 (`ray start` with the other arguments) and wait until it is up: its
# `ray start` says so in its log. Ray gives a node's raylet 30 s to register (hard-coded in
# ray._private.node), which a loaded machine can miss while the node's Python agents start;
# such a node exits and is started again, at most $ATTEMPTS times.
ATTEMPTS="${RAY_CLUSTER_ATTEMPTS:-5}"
start_node() {
    local i="$1" attempt pid waited
    shift
    for attempt in $(seq 1 "$ATTEMPTS"); do
        rm -rf "$DIR/node-$i"
        # setsid: the node's `ray start` leads a process group of its own (pid = group id)
        setsid "$RAY" start "$@" "${COMMON[@]}" --temp-dir "$DIR/node-$i" \
            >"$DIR/node-$i.log" 2>&1 </dev/null &
        pid=$!
        echo "$pid" >>"$PIDS"
        waited=0
        while kill -0 "$pid" 2>/dev/null; do
            if grep -q "Ray runtime started" "$DIR/node-$i.log"; then
                return 0
            fi
            waited=$((waited + 1))
            [ "$waited" -lt 600 ] || fail "node $i did not start in 300 s" "$DIR/node-$i.log"
            sleep 0.5
        done
        stop_node "$pid"  # whatever of it is left
        sed -i "/^$pid\$/d" "$PIDS"
        echo "ray-cluster.sh: node $i exited while starting (attempt $attempt of $ATTEMPTS):" \
             "$(grep -m1 -E "Exception|Error" "$DIR/node-$i.log" || tail -n 1 "$DIR/node-$i.log")" >&2
    done
    fail "node $i did not start in $ATTEMPTS attempts" "$DIR/node-$i.log"
}

start_node 0 --head --port "$PORT" --include-dashboard false
for i in $(seq 1 $((NODES - 1))); do
    # one log monitor a machine (Ray's advice): the head's
    start_node "$i" --address "$ADDRESS" --include-log-monitor false
done
for _ in $(seq 1 30); do  # `ray status` lists a node some seconds after it has started
    up="$(nodes_up)"
    [ "$up" -lt "$NODES" ] || break
    sleep 2
done
[ "$up" -eq "$NODES" ] || fail "the cluster has $up alive nodes, not $NODES" "$DIR/node-0.log"
echo "Ray cluster of $NODES nodes ($CPUS CPU each) at $ADDRESS; clients: source $DIR/client.env" >&2
echo "$ADDRESS"
