#!/usr/bin/env bash
# Run kefu locally, from a fresh checkout, in one command:
#
#   scripts/dev.sh
#
# Makes sure gcc/pkg-config/cargo, PostgreSQL and Redis are there (installing
# and starting them when missing, which needs root), creates the database,
# builds the release binary, applies migrations, creates a demo site and admin
# (printing the credentials and URLs), then runs the server in the foreground.
#
# Settings come from the environment, then from ./.env when present (see
# .env.example). Set KEFU_SKIP_SERVICES=1 to use PostgreSQL/Redis you run
# yourself elsewhere (DATABASE_URL / REDIS_URL) without touching local ones.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ -f .env ]]; then
    echo "dev: reading .env"
    set -a
    # shellcheck disable=SC1091
    . ./.env
    set +a
fi

# shellcheck source=scripts/lib/services.sh
. scripts/lib/services.sh

export KEFU_PG_PORT="${KEFU_PG_PORT:-5432}"
export KEFU_REDIS_PORT="${KEFU_REDIS_PORT:-6379}"
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:${KEFU_PG_PORT}/kefu}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:${KEFU_REDIS_PORT}}"
export KEFU_BIND="${KEFU_BIND:-0.0.0.0:6006}"
export RUST_LOG="${RUST_LOG:-info}"

# The database named by DATABASE_URL (postgres://user@host:port/NAME?opts), else kefu.
db_name() {
    local rest="${DATABASE_URL#*://}"
    if [[ "$rest" == */* ]]; then
        rest="${rest#*/}"
        rest="${rest%%\?*}"
    else
        rest=""
    fi
    printf '%s' "${rest:-kefu}"
}

ensure_build_tools
if [[ "${KEFU_SKIP_SERVICES:-0}" == 1 ]]; then
    echo "dev: KEFU_SKIP_SERVICES=1, not managing local PostgreSQL/Redis"
else
    ensure_postgres
    ensure_redis
    ensure_database "$(db_name)"
fi

echo "dev: cargo build --release"
cargo build --release

bin="${CARGO_TARGET_DIR:-target}/release/kefu"
if [[ ! -x "$bin" ]]; then
    echo "error: $bin was not built" >&2
    exit 1
fi

echo "dev: $bin migrate"
"$bin" migrate

echo "dev: $bin demo"
"$bin" demo

echo "dev: $bin serve (listening on $KEFU_BIND; Ctrl-C stops it)"
exec "$bin" serve
