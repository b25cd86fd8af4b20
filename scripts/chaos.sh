#!/usr/bin/env bash
# Delivery under faults (issue 8): the chaos scenarios of tests/chaos.rs, one at a time.
#
#   scripts/chaos.sh                 every scenario (about 3 minutes)
#   scripts/chaos.sh kill_9 frozen   only the scenarios whose test name contains a word
#
# Each scenario starts its own PostgreSQL (initdb into a temporary directory, so the
# PostgreSQL server binaries must be installed: scripts/lib/services.sh ensure_postgres
# does that) and its own redis-server on free ports, runs kefu nodes as processes of the
# real binary, puts them under load with widget-like WebSocket clients, injects a fault
# (kill -9, PostgreSQL restart or SIGSTOP, Redis restart, SIGTERM, rolling restart, a
# client that never reads), heals it, and checks that every client ends with exactly the
# committed messages and that every acknowledged message is in PostgreSQL.
#
# The scenarios are #[ignore]d in the ordinary `cargo test`/`cargo nextest` run (they
# time things and need the machine to themselves); this script runs them with
# --ignored --test-threads=1. scripts/test.sh runs it through scripts/test.d/50-chaos.sh.
#
# Node logs and a per-scenario summary (timings, counts): $KEFU_ARTIFACTS_DIR/chaos/
# (default artifacts/chaos/), the overall summary in artifacts/chaos/summary.txt.
# KEFU_CHAOS_VISITORS sets the visitors per scenario (default 15).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export KEFU_ARTIFACTS_DIR="${KEFU_ARTIFACTS_DIR:-$PWD/artifacts}"
mkdir -p "$KEFU_ARTIFACTS_DIR/chaos"
rm -f "$KEFU_ARTIFACTS_DIR/chaos/summary.txt"

missing=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=("PostgreSQL server binaries (/usr/lib/postgresql/*/bin/initdb)")
command -v redis-server >/dev/null 2>&1 || missing+=("redis-server")
command -v pgrep >/dev/null 2>&1 || missing+=("pgrep (procps)")
if ((${#missing[@]})); then
    printf 'chaos: missing: %s\n' "${missing[@]}" >&2
    exit 1
fi

# Many sockets per scenario.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

start=$SECONDS
rc=0
# The test harness takes one name filter; run once per filter given (default: all).
if (($# == 0)); then
    set -- chaos_
fi
for filter in "$@"; do
    cargo test --test chaos -- --ignored --test-threads=1 --nocapture "$filter" || rc=$?
done
echo
echo "chaos: summary ($((SECONDS - start)) s, exit $rc):"
cat "$KEFU_ARTIFACTS_DIR/chaos/summary.txt" 2>/dev/null || echo "  (no scenario finished)"
exit "$rc"
