#!/usr/bin/env bash
# Monitoring checks against a live node:
#  - `promtool check metrics` accepts a scrape of /metrics taken after some traffic;
#  - every metric name used by scripts/grafana/*.json exists in that scrape;
#  - /readyz answers 200 with postgres and redis "ok".
# Installs Debian's prometheus package (which ships promtool) when promtool is missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

if ! command -v promtool >/dev/null 2>&1; then
    echo "monitoring: installing promtool (Debian package prometheus)"
    if [[ $(id -u) -ne 0 ]]; then
        echo "monitoring: promtool missing and not root; install the prometheus package" >&2
        exit 1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus >/dev/null
fi

base_url="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
db="kefu_mon_$$"
admin_url="${base_url%/*}/postgres"
db_url="${base_url%/*}/$db"
psql "$admin_url" -qc "CREATE DATABASE $db" >/dev/null
port=$((20000 + RANDOM % 20000))
log="${KEFU_ARTIFACTS_DIR:-artifacts}/monitoring-node.log"
mkdir -p "$(dirname "$log")"
cargo build -q
DATABASE_URL="$db_url" REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}" KEFU_REDIS_PREFIX="mon$$" \
    KEFU_BIND="127.0.0.1:$port" KEFU_ADMIN_EMAIL=mon@kefu.test KEFU_ADMIN_PASSWORD=monitoring-pass \
    target/debug/kefu serve >"$log" 2>&1 &
pid=$!
cleanup() {
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    psql "$admin_url" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null || true
}
trap cleanup EXIT
b="http://127.0.0.1:$port"
for _ in $(seq 1 100); do
    curl -sf "$b/healthz" >/dev/null && break
    sleep 0.1
done

ready=$(curl -s -w ' %{http_code}' "$b/readyz")
echo "monitoring: /readyz -> $ready"
[[ "$ready" == *'"postgres":"ok"'* && "$ready" == *'"redis":"ok"'* && "$ready" == *' 200' ]]

# Some traffic so histograms and labelled series exist.
token=$(curl -sf -X POST "$b/api/auth/login" -H 'content-type: application/json' \
    -d '{"email":"mon@kefu.test","password":"monitoring-pass"}' | sed 's/.*"token":"\([^"]*\)".*/\1/')
key=$(curl -sf -X POST "$b/api/sites" -H "authorization: Bearer $token" -H 'content-type: application/json' \
    -d '{"name":"mon"}' | sed 's/.*"widget_key":"\([^"]*\)".*/\1/')
curl -sf "$b/api/config?site=$key" >/dev/null
curl -sf "$b/api/config?site=$key" >/dev/null
curl -s "$b/api/conversations/not-a-uuid" -H "authorization: Bearer $token" >/dev/null
curl -sf "$b/api/stats" -H "authorization: Bearer $token" >/dev/null
sleep 1.2 # derived gauges refresh every second

scrape=$(mktemp)
curl -sf "$b/metrics" >"$scrape"
echo "monitoring: promtool check metrics"
promtool check metrics <"$scrape"

missing=0
for name in $(grep -ohE '[a-z_]+(_total|_seconds_bucket|_seconds_sum|_seconds_count|_bucket|_sum|_count)?\b' scripts/grafana/*.json |
    grep -E '^(http_|websocket_|message_|cache_|conversation_|db_|redis_|rooms_|rate_limited|slow_)' | sort -u); do
    if ! grep -qE "^${name}(\{| )" "$scrape"; then
        echo "monitoring: dashboard uses $name, which the scrape does not have" >&2
        missing=1
    fi
done
for name in http_requests_total http_request_duration_seconds_bucket websocket_connections \
    message_processed_total cache_hit_ratio; do
    grep -qE "^${name}(\{| )" "$scrape" || { echo "monitoring: $name missing (SPEC §6)" >&2; missing=1; }
done
grep -q 'route="/api/conversations/{id}"' "$scrape" || { echo "monitoring: route label is not the pattern" >&2; missing=1; }
rm -f "$scrape"
[[ $missing -eq 0 ]]
echo "monitoring: ok"
