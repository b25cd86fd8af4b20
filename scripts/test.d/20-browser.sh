#!/usr/bin/env bash
# Browser tests of the chat widget and the agent console (tests/browser/*.test.js), in
# Debian's chromium driven by playwright-core:
#
#   scripts/test.d/20-browser.sh        (scripts/test.sh runs it after the Rust tests)
#
# Builds kefu, creates a fresh database, starts kefu on a free 127.0.0.1 port with a
# bootstrap admin, creates a site through the API, runs `node --test`, then stops the
# server and drops the database. Screenshots and the server log go to
# $KEFU_ARTIFACTS_DIR/browser (default ./artifacts/browser).
#
# Environment: KEFU_BROWSER_TESTS (test files to run, default all), DATABASE_URL (any database on the PostgreSQL to use; default the postgres
# database on 127.0.0.1:$KEFU_PG_PORT), REDIS_URL (optional), KEFU_ARTIFACTS_DIR.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
repo_root="$PWD"

# shellcheck source=scripts/lib/services.sh
. scripts/lib/services.sh

artifacts="${KEFU_ARTIFACTS_DIR:-$repo_root/artifacts}/browser"
mkdir -p "$artifacts"
export KEFU_ARTIFACTS_DIR="${KEFU_ARTIFACTS_DIR:-$repo_root/artifacts}"

# ---- tools: chromium from Debian, node + playwright-core from npm (never a downloaded browser)
if [[ ! -x /usr/bin/chromium ]]; then
    kefu_apt_install chromium
fi
# Text in screenshots needs fonts: Latin, and CJK for 客服.
kefu_apt_ensure fonts-dejavu-core fonts-wqy-microhei
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    kefu_apt_install nodejs npm
fi
echo "browser: $(/usr/bin/chromium --version 2>/dev/null || echo chromium), node $(node --version)"
(
    cd tests/browser
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error
)

# ---- the binary
ensure_build_tools >/dev/null
cargo build --bin kefu
bin="$repo_root/${CARGO_TARGET_DIR:-target}/debug/kefu"
[[ -x "$bin" ]] || { echo "error: $bin was not built" >&2; exit 1; }

# ---- a fresh database
admin_url="${DATABASE_URL:-postgres://postgres@127.0.0.1:${KEFU_PG_PORT:-5432}/postgres}"
base="${admin_url%%\?*}"
query=""
[[ "$admin_url" == *\?* ]] && query="?${admin_url#*\?}"
rest="${base#*://}"
if [[ "$rest" == */* ]]; then
    base="${base%/*}"
fi
db="kefu_browser_$$_${RANDOM}"
db_url="$base/$db$query"
attachment_dir="$(mktemp -d)"

server_pid_file="$artifacts/kefu.pid"
server_log="$artifacts/kefu.log"
: >"$server_log"

cleanup() {
    local rc=$? pid
    if [[ -f "$server_pid_file" ]]; then
        pid="$(cat "$server_pid_file")"
        if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 1 100); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
            kill -KILL "$pid" 2>/dev/null || true
        fi
        rm -f "$server_pid_file"
    fi
    rm -rf "$attachment_dir"
    psql -X -q "$admin_url" -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1 ||
        echo "browser: warning: could not drop database $db" >&2
    if ((rc != 0)); then
        echo "browser: FAILED; server log: $server_log (last lines below)" >&2
        tail -n 30 "$server_log" >&2 || true
    fi
    exit "$rc"
}
trap cleanup EXIT

psql -X -q "$admin_url" -v ON_ERROR_STOP=1 -c "CREATE DATABASE \"$db\"" >/dev/null
echo "browser: database $db"

port="$(node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')"

export DATABASE_URL="$db_url"
export KEFU_BIND="127.0.0.1:$port"
export KEFU_URL="http://127.0.0.1:$port"
export KEFU_ADMIN_EMAIL="alice@example.com"
export KEFU_ADMIN_PASSWORD="browser-test-password"
export KEFU_REDIS_PREFIX="kefu-browser-$$"
export KEFU_ATTACHMENT_DIR="$attachment_dir"
export KEFU_BIN="$bin"
export KEFU_PID_FILE="$server_pid_file"
export KEFU_LOG_FILE="$server_log"
export RUST_LOG="${RUST_LOG:-info}"

"$bin" serve >>"$server_log" 2>&1 &
echo $! >"$server_pid_file"
for _ in $(seq 1 240); do
    if node -e 'fetch(process.env.KEFU_URL + "/healthz").then(r => process.exit(r.ok ? 0 : 1), () => process.exit(1))'; then
        break
    fi
    sleep 0.25
done
echo "browser: kefu on $KEFU_URL (pid $(cat "$server_pid_file"))"

KEFU_SITE_KEY="$(node tests/browser/lib/setup.js)"
export KEFU_SITE_KEY

cd tests/browser
# KEFU_BROWSER_TESTS="chat.test.js xss.test.js" runs some of the files only.
# shellcheck disable=SC2086
node --test --test-concurrency=1 --test-reporter=spec ${KEFU_BROWSER_TESTS:-./*.test.js}
