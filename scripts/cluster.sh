#!/usr/bin/env bash
# Run several kefu nodes on this machine against one PostgreSQL and one Redis.
#
#   scripts/cluster.sh N         start N nodes on 127.0.0.1:6006 … 6006+N-1 (default 3)
#   scripts/cluster.sh stop      stop them gracefully (SIGTERM, then wait)
#   scripts/cluster.sh status    list the nodes and their /readyz
#
# Environment: DATABASE_URL, REDIS_URL (defaults as in scripts/dev.sh), KEFU_CLUSTER_DIR
# (pid and log files, default /tmp/kefu-cluster), KEFU_CLUSTER_PORT (first port, 6006),
# KEFU_BIN (binary; default target/release/kefu, built when missing).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

dir="${KEFU_CLUSTER_DIR:-/tmp/kefu-cluster}"
first_port="${KEFU_CLUSTER_PORT:-6006}"
bin="${KEFU_BIN:-target/release/kefu}"
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/kefu}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
export RUST_LOG="${RUST_LOG:-info}"
mkdir -p "$dir"

stop_all() {
    local pidfile pid
    shopt -s nullglob
    for pidfile in "$dir"/node-*.pid; do
        pid=$(cat "$pidfile")
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" || true
        fi
    done
    for pidfile in "$dir"/node-*.pid; do
        pid=$(cat "$pidfile")
        for _ in $(seq 1 150); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "cluster: node pid $pid did not stop in 15 s; killing" >&2
            kill -KILL "$pid" || true
        fi
        rm -f "$pidfile"
    done
    echo "cluster: stopped"
}

status() {
    local pidfile pid port
    shopt -s nullglob
    for pidfile in "$dir"/node-*.pid; do
        pid=$(cat "$pidfile")
        port=$(basename "$pidfile" .pid)
        port=${port#node-}
        printf 'node on :%s pid %s ' "$port" "$pid"
        curl -s -m 2 "http://127.0.0.1:$port/readyz" || printf 'not answering'
        echo
    done
}

case "${1:-3}" in
stop) stop_all; exit 0 ;;
status) status; exit 0 ;;
*[!0-9]*) echo "usage: $0 [N|stop|status]" >&2; exit 2 ;;
esac

n="${1:-3}"
if [[ ! -x "$bin" ]]; then
    cargo build --release
fi
"$bin" migrate
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
for i in $(seq 0 $((n - 1))); do
    port=$((first_port + i))
    KEFU_BIND="127.0.0.1:$port" KEFU_NODE_ID="node-$port" \
        nohup "$bin" serve >"$dir/node-$port.log" 2>&1 &
    echo $! >"$dir/node-$port.pid"
done
for i in $(seq 0 $((n - 1))); do
    port=$((first_port + i))
    for _ in $(seq 1 100); do
        curl -sf -m 1 "http://127.0.0.1:$port/healthz" >/dev/null && break
        sleep 0.1
    done
    echo "cluster: node-$port on http://127.0.0.1:$port (log $dir/node-$port.log)"
done
