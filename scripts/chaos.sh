#!/usr/bin/env bash
# Delivery under faults (issue 8): the chaos scenarios of tests/chaos.rs, one at a time.
#
#   scripts/chaos.sh                 every scenario (about 3 minutes)
#   scripts/chaos.sh kill_9 frozen   only the scenarios whose test name contains a word
#
# Each scenario starts its own PostgreSQL (initdb into a temporary directory; the server
# binaries are installed here when missing) and its own redis-server on free ports, runs
# kefu nodes as processes of the real binary, puts them under load with widget-like
# WebSocket clients, injects a fault (kill -9, PostgreSQL restart or SIGSTOP, Redis
# restart, SIGTERM, rolling restart, a client that never reads), heals it, and checks
# that every client ends with exactly the committed messages and that every acknowledged
# message is in PostgreSQL.
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

# shellcheck source=scripts/lib/services.sh
. scripts/lib/services.sh
# What the scenarios run besides cargo: initdb/pg_ctl, redis-server, kill and pgrep.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    ensure_postgres
fi
command -v redis-server >/dev/null 2>&1 || kefu_apt_ensure redis-server
# (kill: the program, which the tests run; the shell's builtin does not count.)
if ! command -v pgrep >/dev/null 2>&1 || ! [[ -x /bin/kill || -x /usr/bin/kill ]]; then
    kefu_apt_ensure procps
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
