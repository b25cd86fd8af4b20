#!/usr/bin/env bash
# kefu's whole test suite, the one command CI runs (.ci/run) and developers run:
#
#   scripts/test.sh
#
# 1. makes sure gcc/pkg-config/cargo, PostgreSQL and Redis are there (installing
#    and starting them when missing, which needs root);
# 2. runs, in order and stopping at the first failure:
#      cargo fmt --check
#      cargo clippy --all-targets -- -D warnings
#      cargo nextest run --all-targets --no-fail-fast   (cargo test if no nextest)
#      every executable scripts/test.d/*.sh, in sorted order   (run_extra_suites)
# 3. prints a summary.
#
# Tests create their own databases from DATABASE_URL (default: the postgres
# database on 127.0.0.1:$KEFU_PG_PORT) and use REDIS_URL.
# Set KEFU_SKIP_SERVICES=1 to skip managing local PostgreSQL/Redis.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo_root="$PWD"

# shellcheck source=scripts/lib/services.sh
. scripts/lib/services.sh

export KEFU_PG_PORT="${KEFU_PG_PORT:-5432}"
export KEFU_REDIS_PORT="${KEFU_REDIS_PORT:-6379}"
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:${KEFU_PG_PORT}/postgres}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:${KEFU_REDIS_PORT}}"
# Where suites put screenshots, logs and reports (git-ignored).
export KEFU_ARTIFACTS_DIR="${KEFU_ARTIFACTS_DIR:-$repo_root/artifacts}"

# ---------------------------------------------------------------------------
# Step bookkeeping and summary
# ---------------------------------------------------------------------------

summary=()
suite_start=$SECONDS

print_summary() {
    local rc=$? line
    echo
    echo "==================== test summary ===================="
    if ((${#summary[@]} == 0)); then
        echo "  (no step ran)"
    fi
    for line in "${summary[@]}"; do
        echo "  $line"
    done
    if ((rc == 0)); then
        echo "  result: PASSED in $((SECONDS - suite_start)) s"
    else
        echo "  result: FAILED (exit $rc) after $((SECONDS - suite_start)) s"
    fi
    echo "======================================================"
}
trap print_summary EXIT

# run_step NAME COMMAND...: run one step; on failure record it and exit (fail fast).
run_step() {
    local name="$1" start rc=0
    shift
    echo
    echo "---- $name: $*"
    start=$SECONDS
    "$@" || rc=$?
    if ((rc == 0)); then
        summary+=("$(printf '%-8s %-45s %5d s' ok "$name" $((SECONDS - start)))")
    else
        summary+=("$(printf '%-8s %-45s %5d s  (exit %d)' FAILED "$name" $((SECONDS - start)) "$rc")")
        exit "$rc"
    fi
}

skip_step() {
    summary+=("$(printf '%-8s %-45s %s' skipped "$1" "${2:-}")")
}

# ---------------------------------------------------------------------------
# Environment
# ---------------------------------------------------------------------------

ensure_build_tools
if [[ "${KEFU_SKIP_SERVICES:-0}" == 1 ]]; then
    echo "test: KEFU_SKIP_SERVICES=1, not managing local PostgreSQL/Redis"
else
    ensure_postgres
    ensure_redis
fi

# Many WebSocket tests hold many sockets: raise the soft open-files limit.
hard_nofile="$(ulimit -Hn)"
if [[ "$hard_nofile" == unlimited ]]; then
    ulimit -n 1048576 2>/dev/null || true
else
    ulimit -n "$hard_nofile" 2>/dev/null || true
fi
echo "test: open files limit $(ulimit -n)"

mkdir -p "$KEFU_ARTIFACTS_DIR"

have_nextest() { cargo nextest --version >/dev/null 2>&1; }

if ! have_nextest; then
    echo "test: cargo-nextest missing, installing it"
    cargo install cargo-nextest --locked ||
        echo "test: warning: could not install cargo-nextest; falling back to cargo test" >&2
fi

# ---------------------------------------------------------------------------
# Hook point for later suites (browser tests, chaos, promtool, ...).
# Add an executable file scripts/test.d/NN-name.sh; it runs from the repo root
# after the Rust tests, with this script's environment (DATABASE_URL,
# REDIS_URL, KEFU_ARTIFACTS_DIR, ...), and must exit 0.
# ---------------------------------------------------------------------------
run_extra_suites() {
    local dir="scripts/test.d" f
    local files=()
    if [[ -d "$dir" ]]; then
        while IFS= read -r f; do
            files+=("$f")
        done < <(find "$dir" -maxdepth 1 -type f -name '*.sh' | LC_ALL=C sort)
    fi
    if ((${#files[@]} == 0)); then
        skip_step "extra suites" "(no $dir/*.sh)"
        return 0
    fi
    for f in "${files[@]}"; do
        if [[ -x "$f" ]]; then
            run_step "extra: ${f#"$dir"/}" "$f"
        else
            echo "test: $f is not executable, skipping it" >&2
            skip_step "extra: ${f#"$dir"/}" "(not executable)"
        fi
    done
}

# ---------------------------------------------------------------------------
# The suite
# ---------------------------------------------------------------------------

run_step "cargo fmt --check" cargo fmt --check
run_step "cargo clippy" cargo clippy --all-targets -- -D warnings
if have_nextest; then
    run_step "cargo nextest run" cargo nextest run --all-targets --no-fail-fast
else
    run_step "cargo test" cargo test --all-targets
fi
run_extra_suites
