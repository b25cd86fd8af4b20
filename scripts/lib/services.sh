# shellcheck shell=bash
# Local services and tools for kefu's scripts (scripts/dev.sh, scripts/test.sh, .ci/run).
#
# Source this file; it defines functions only and changes no shell options:
#   ensure_build_tools     gcc + pkg-config present, cargo on PATH
#   ensure_postgres        PostgreSQL answering on 127.0.0.1:$KEFU_PG_PORT
#   ensure_redis           Redis answering on 127.0.0.1:$KEFU_REDIS_PORT
#   ensure_database NAME   database NAME exists on that PostgreSQL
#
# Every function prints one short line saying what it did, and returns non-zero
# with a clear message when it cannot do it. Safe under `set -euo pipefail`.
#
# Environment:
#   KEFU_PG_PORT     PostgreSQL port (default 5432)
#   KEFU_REDIS_PORT  Redis port (default 6379)
#   KEFU_APT_UPDATED set to 1 once `apt-get update` has run (exported, so child
#                    scripts do not run it again)

if [[ -n "${_KEFU_SERVICES_SH:-}" ]]; then
    return 0
fi
_KEFU_SERVICES_SH=1

_kefu_log() { printf '%s\n' "$*"; }
_kefu_err() { printf 'error: %s\n' "$*" >&2; }

_kefu_pg_port() { printf '%s' "${KEFU_PG_PORT:-5432}"; }
_kefu_redis_port() { printf '%s' "${KEFU_REDIS_PORT:-6379}"; }

_kefu_is_root() { [[ "$(id -u)" -eq 0 ]]; }

# _kefu_join SEP WORD...: print the words joined by SEP.
_kefu_join() {
    local sep="$1" out=""
    shift
    while (($#)); do
        out+="${out:+$sep}$1"
        shift
    done
    printf '%s' "$out"
}

# Run a command as root: directly when we are root, through passwordless sudo
# when that is available, otherwise fail (return 1) without running anything.
_kefu_as_root() {
    if _kefu_is_root; then
        "$@"
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo -n "$@"
    else
        return 1
    fi
}

_kefu_can_root() {
    _kefu_is_root || { command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; }
}

# `apt-get update`, at most once per script run (and its children).
kefu_apt_update_once() {
    if [[ "${KEFU_APT_UPDATED:-0}" == 1 ]]; then
        return 0
    fi
    _kefu_log "apt: updating package lists"
    if ! _kefu_as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null; then
        _kefu_err "apt-get update failed"
        return 1
    fi
    KEFU_APT_UPDATED=1
    export KEFU_APT_UPDATED
}

# kefu_apt_install PKG...: install Debian packages (as root), or explain what to
# install when we are not root.
kefu_apt_install() {
    if ! _kefu_can_root; then
        _kefu_err "need root to install packages: $*"
        _kefu_err "install them yourself:  sudo apt-get install -y $*"
        return 1
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        _kefu_err "no apt-get on this system; install these packages yourself: $*"
        return 1
    fi
    kefu_apt_update_once || return 1
    _kefu_log "apt: installing $*"
    if ! _kefu_as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "$@" </dev/null >/dev/null; then
        _kefu_err "apt-get install $* failed"
        return 1
    fi
}

# kefu_apt_ensure PKG...: install those of the Debian packages that are not installed.
kefu_apt_ensure() {
    local pkg missing=()
    for pkg in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
            missing+=("$pkg")
        fi
    done
    if ((${#missing[@]} == 0)); then
        return 0
    fi
    kefu_apt_install "${missing[@]}"
}

# ---------------------------------------------------------------------------
# Build tools
# ---------------------------------------------------------------------------

ensure_build_tools() {
    local installed=()
    command -v gcc >/dev/null 2>&1 || installed+=(gcc libc6-dev)
    command -v pkg-config >/dev/null 2>&1 || installed+=(pkg-config)
    if ((${#installed[@]} > 0)); then
        kefu_apt_install "${installed[@]}" || return 1
    fi
    if ! command -v cargo >/dev/null 2>&1 && [[ -f "${HOME:-/root}/.cargo/env" ]]; then
        # shellcheck disable=SC1091
        . "${HOME:-/root}/.cargo/env"
    fi
    if ! command -v cargo >/dev/null 2>&1; then
        _kefu_err "cargo not found on PATH (nor in \$HOME/.cargo/env)."
        _kefu_err "install the Rust toolchain with rustup, then run this again."
        return 1
    fi
    if ((${#installed[@]} > 0)); then
        _kefu_log "build tools: installed ${installed[*]}; $(cargo --version)"
    else
        _kefu_log "build tools: gcc, pkg-config and $(cargo --version) present"
    fi
}

# ---------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------

_kefu_pg_ready() {
    local port
    port="$(_kefu_pg_port)"
    if command -v pg_isready >/dev/null 2>&1; then
        pg_isready -q -h 127.0.0.1 -p "$port" -t 2 >/dev/null 2>&1
    else
        # No client tools: settle for "something accepts TCP on the port".
        ( { exec 3<>"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null)
    fi
}

_kefu_pg_server_installed() {
    compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null
}

_kefu_pg_newest_version() {
    local d
    for d in /usr/lib/postgresql/*/bin/postgres; do
        d="${d#/usr/lib/postgresql/}"
        printf '%s\n' "${d%%/*}"
    done | sort -V | tail -n 1
}

# Print "version name status" of the cluster configured for port $1, if any.
_kefu_pg_cluster_on_port() {
    command -v pg_lsclusters >/dev/null 2>&1 || return 0
    pg_lsclusters -h 2>/dev/null | awk -v p="$1" '$3 == p { print $1, $2, $4; exit }'
}

# Trust auth for local socket and loopback TCP. Only for clusters we created.
# The file's previous content is kept below, commented out.
_kefu_pg_trust_hba() {
    local ver="$1" name="$2" hba old
    hba="/etc/postgresql/$ver/$name/pg_hba.conf"
    if [[ ! -f "$hba" ]]; then
        _kefu_err "postgres: $hba not found"
        return 1
    fi
    if grep -q '^# Written by kefu scripts/lib/services.sh' "$hba"; then
        return 0
    fi
    old="$(sed 's/^/#| /' "$hba")"
    _kefu_as_root tee "$hba" >/dev/null <<EOF
# Written by kefu scripts/lib/services.sh for a local development/test cluster:
# trust for the local socket and loopback TCP only.
# TYPE  DATABASE     USER  ADDRESS        METHOD
local   all          all                  trust
host    all          all   127.0.0.1/32   trust
host    all          all   ::1/128        trust
local   replication  all                  trust
host    replication  all   127.0.0.1/32   trust
host    replication  all   ::1/128        trust

# The previous content of this file:
$old
EOF
}

# psql as the postgres OS user over the cluster's socket (peer auth works there
# even before pg_hba.conf was touched).
_kefu_pg_admin_psql() {
    local port
    port="$(_kefu_pg_port)"
    if _kefu_is_root && command -v runuser >/dev/null 2>&1; then
        runuser -u postgres -- psql -X -q -p "$port" -d postgres "$@"
    elif _kefu_is_root; then
        local args
        printf -v args '%q ' "$@"
        su postgres -s /bin/sh -c "psql -X -q -p '$port' -d postgres $args"
    else
        psql -X -q -h 127.0.0.1 -p "$port" -U postgres -d postgres "$@"
    fi
}

_kefu_pg_ensure_root_role() {
    local have
    have="$(_kefu_pg_admin_psql -tAc "SELECT 1 FROM pg_roles WHERE rolname = 'root'" 2>/dev/null || true)"
    if [[ "$have" != 1 ]]; then
        if ! _kefu_pg_admin_psql -v ON_ERROR_STOP=1 -c 'CREATE ROLE root SUPERUSER LOGIN' >/dev/null; then
            _kefu_err "postgres: could not create the superuser role root"
            return 1
        fi
        return 0
    fi
    return 0
}

ensure_postgres() {
    local port did=() ver name status line i pg_installed=0
    port="$(_kefu_pg_port)"
    if _kefu_pg_ready; then
        _kefu_log "postgres: already running on 127.0.0.1:$port"
        return 0
    fi

    if ! _kefu_pg_server_installed; then
        if ! _kefu_can_root; then
            _kefu_err "postgres: nothing answers on 127.0.0.1:$port and the PostgreSQL server is not installed."
            _kefu_err "install and start it:  sudo apt-get install -y postgresql postgresql-contrib"
            return 1
        fi
        kefu_apt_install postgresql postgresql-contrib || return 1
        pg_installed=1
        did+=(installed)
    fi
    if ! _kefu_can_root; then
        _kefu_err "postgres: installed but not answering on 127.0.0.1:$port; starting it needs root:"
        _kefu_err "  sudo pg_ctlcluster <version> main start   (see pg_lsclusters)"
        return 1
    fi

    # The cluster that serves our port; the package's postinst may have made one.
    local owned=0
    line="$(_kefu_pg_cluster_on_port "$port")"
    if [[ -n "$line" ]]; then
        read -r ver name status <<<"$line"
        # A cluster that came with the package we just installed is ours to configure.
        owned=$pg_installed
    else
        ver="$(_kefu_pg_newest_version)"
        name=main
        if [[ -d "/etc/postgresql/$ver/main" ]]; then
            name="kefu$port" # "main" exists but serves another port
        fi
        status=down
        if ! _kefu_as_root pg_createcluster "$ver" "$name" -p "$port" \
            -o "listen_addresses=localhost" >/dev/null; then
            _kefu_err "postgres: pg_createcluster $ver $name -p $port failed"
            return 1
        fi
        owned=1
        did+=("created cluster $ver/$name")
    fi

    if ((owned)); then
        _kefu_pg_trust_hba "$ver" "$name" || return 1
        _kefu_as_root pg_conftool "$ver" "$name" set listen_addresses localhost >/dev/null 2>&1 || true
        did+=("trust auth on loopback")
    fi

    if [[ "$status" == online* ]]; then
        if ((owned)); then
            _kefu_as_root pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" reload >/dev/null 2>&1 || true
        fi
    else
        if ! _kefu_as_root pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" start; then
            _kefu_err "postgres: pg_ctlcluster $ver $name start failed; see /var/log/postgresql/postgresql-$ver-$name.log"
            return 1
        fi
        did+=(started)
    fi

    for ((i = 0; i < 60; i++)); do
        _kefu_pg_ready && break
        sleep 1
    done
    if ! _kefu_pg_ready; then
        _kefu_err "postgres: cluster $ver/$name did not answer on 127.0.0.1:$port within 60 s"
        _kefu_err "see /var/log/postgresql/postgresql-$ver-$name.log"
        return 1
    fi

    _kefu_pg_ensure_root_role || return 1
    _kefu_log "postgres: $(_kefu_join ', ' "${did[@]:-ready}") ($ver/$name on 127.0.0.1:$port)"
}

# ensure_database NAME: create database NAME on 127.0.0.1:$KEFU_PG_PORT if missing.
ensure_database() {
    local db="${1:-}" port have
    port="$(_kefu_pg_port)"
    if [[ ! "$db" =~ ^[A-Za-z_][A-Za-z0-9_-]{0,62}$ ]]; then
        _kefu_err "ensure_database: bad database name '${db}'"
        return 1
    fi
    if ! have="$(psql -X -h 127.0.0.1 -p "$port" -U postgres -d postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname = '$db'" 2>&1)"; then
        _kefu_err "database: cannot query 127.0.0.1:$port as postgres: $have"
        return 1
    fi
    if [[ "$have" == 1 ]]; then
        _kefu_log "database: $db already exists"
        return 0
    fi
    if ! psql -X -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 \
        -c "CREATE DATABASE \"$db\"" >/dev/null; then
        _kefu_err "database: could not create $db on 127.0.0.1:$port"
        return 1
    fi
    _kefu_log "database: created $db"
}

# ---------------------------------------------------------------------------
# Redis
# ---------------------------------------------------------------------------

_kefu_redis_ping() {
    local port reply=""
    port="$(_kefu_redis_port)"
    if command -v redis-cli >/dev/null 2>&1; then
        reply="$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null || true)"
    else
        # No redis-cli: speak the protocol over bash's /dev/tcp.
        reply="$(
            { exec 3<>"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null || exit 0
            printf 'PING\r\n' >&3
            IFS= read -r -t 2 r <&3 || true
            printf '%s' "${r%$'\r'}"
        )" || true
        reply="${reply#+}"
    fi
    [[ "$reply" == PONG ]]
}

ensure_redis() {
    local port did=() i rundir
    port="$(_kefu_redis_port)"
    if _kefu_redis_ping; then
        _kefu_log "redis: already running on 127.0.0.1:$port"
        return 0
    fi
    if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
        if ! _kefu_can_root; then
            _kefu_err "redis: nothing answers on 127.0.0.1:$port and Redis is not installed."
            _kefu_err "install it:  sudo apt-get install -y redis-server redis-tools"
            return 1
        fi
        kefu_apt_install redis-server redis-tools || return 1
        did+=(installed)
        # The package may have started its own server on the default port.
        if _kefu_redis_ping; then
            _kefu_log "redis: installed; already running on 127.0.0.1:$port"
            return 0
        fi
    fi

    rundir="${TMPDIR:-/tmp}"
    if ! redis-server --daemonize yes --bind 127.0.0.1 --port "$port" \
        --save "" --appendonly no --dir "$rundir" \
        --pidfile "$rundir/kefu-redis-$port.pid" \
        --logfile "$rundir/kefu-redis-$port.log" </dev/null; then
        _kefu_err "redis: redis-server failed to start on port $port"
        return 1
    fi
    did+=(started)
    for ((i = 0; i < 30; i++)); do
        _kefu_redis_ping && break
        sleep 1
    done
    if ! _kefu_redis_ping; then
        _kefu_err "redis: no PONG from 127.0.0.1:$port within 30 s; log: $rundir/kefu-redis-$port.log"
        tail -n 5 "$rundir/kefu-redis-$port.log" >&2 2>/dev/null || true
        return 1
    fi
    _kefu_log "redis: $(_kefu_join ' and ' "${did[@]}") on 127.0.0.1:$port"
}
