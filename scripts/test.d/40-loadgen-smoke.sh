#!/usr/bin/env bash
# Smoke run of the load generator (src/bin/loadgen.rs) so the tool keeps working:
# a fresh kefu node on a database of its own, 100 visitors and 2 agents for a few
# seconds at 1 message/s each. Fails when any error occurred, a connection is missing,
# or a message was not acknowledged or never reached an agent (loadgen --fail-on-error).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

base_url="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
db="kefu_loadgen_$$"
admin_url="${base_url%/*}/postgres"
db_url="${base_url%/*}/$db"
artifacts="${KEFU_ARTIFACTS_DIR:-artifacts}"
mkdir -p "$artifacts"
log="$artifacts/loadgen-smoke-node.log"
report="$artifacts/loadgen-smoke.json"

cargo build -q --bin kefu --bin loadgen
psql "$admin_url" -qc "CREATE DATABASE $db" >/dev/null
port=$((20000 + RANDOM % 20000))
DATABASE_URL="$db_url" REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}" KEFU_REDIS_PREFIX="lgsmoke$$" \
    KEFU_BIND="127.0.0.1:$port" KEFU_ADMIN_EMAIL=smoke@kefu.test KEFU_ADMIN_PASSWORD=smoke-password-1 \
    RUST_LOG=warn target/debug/kefu serve >"$log" 2>&1 &
pid=$!
cleanup() {
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    psql "$admin_url" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null || true
}
trap cleanup EXIT
for _ in $(seq 1 150); do
    curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break
    sleep 0.1
done

target/debug/loadgen --url "http://127.0.0.1:$port" \
    --admin-email smoke@kefu.test --admin-password smoke-password-1 \
    --visitors 100 --agents 2 --rates 1 --duration 4 --ramp-up 1 --warmup 1 --drain 5 \
    --sources 4 --json "$report" --fail-on-error
echo "loadgen smoke: ok (report in $report)"
