#!/usr/bin/env bash
# Start a throwaway redis-server for fraudseq's Redis state-store tests and print its URL.
#
#   bash scripts/redis-server.sh            # -> redis://127.0.0.1:6399/0
#   REDIS_PORT=6400 bash scripts/redis-server.sh
#   bash scripts/redis-server.sh --stop     # shut it down
#
# Idempotent: if a server already answers on the port, its URL is printed and nothing else
# happens. Installs Debian's redis-server when it is missing (needs root, as in CI). The
# server listens on 127.0.0.1 only, keeps nothing on disk (no RDB/AOF) and runs daemonized;
# its pid file and log are in ${REDIS_DIR:-/tmp/fraudseq-redis-$PORT}.
set -euo pipefail

PORT="${REDIS_PORT:-6399}"
DIR="${REDIS_DIR:-/tmp/fraudseq-redis-$PORT}"
URL="redis://127.0.0.1:$PORT/0"

ping() {
    if command -v redis-cli >/dev/null 2>&1; then
        redis-cli -h 127.0.0.1 -p "$PORT" ping 2>/dev/null | grep -q PONG
    else
        # No client: speak the protocol over bash's /dev/tcp.
        (exec 3<>"/dev/tcp/127.0.0.1/$PORT" && printf 'PING\r\n' >&3 && head -c 5 <&3 | grep -q PONG) \
            2>/dev/null
    fi
}

if [ "${1:-}" = "--stop" ]; then
    if [ -f "$DIR/redis.pid" ]; then
        kill "$(cat "$DIR/redis.pid")" 2>/dev/null || true
        rm -f "$DIR/redis.pid"
        echo "stopped redis-server on port $PORT" >&2
    fi
    exit 0
fi

if ping; then
    echo "$URL"
    exit 0
fi

if ! command -v redis-server >/dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "redis-server.sh: redis-server is missing and this is not root; install it with:" \
             "sudo apt-get install -y redis-server" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    # Install without starting the distribution's own service (policy-rc.d refuses starts).
    policy=/usr/sbin/policy-rc.d
    created_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && created_policy=1
    fi
    apt-get install -y --no-install-recommends redis-server >&2 \
        || { apt-get update >&2 && apt-get install -y --no-install-recommends redis-server >&2; }
    if [ "$created_policy" = 1 ]; then rm -f "$policy"; fi
fi

mkdir -p "$DIR"
redis-server --port "$PORT" --bind 127.0.0.1 --protected-mode yes --daemonize yes \
    --pidfile "$DIR/redis.pid" --logfile "$DIR/redis.log" --dir "$DIR" \
    --save '' --appendonly no >&2

for _ in $(seq 1 50); do
    if ping; then
        echo "$URL"
        exit 0
    fi
    sleep 0.1
done
echo "redis-server.sh: redis-server did not answer on 127.0.0.1:$PORT; see $DIR/redis.log" >&2
exit 1
