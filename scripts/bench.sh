#!/usr/bin/env bash
# kefu's benchmarks on this machine (SPEC §7), end to end, from a fresh checkout:
# builds release, makes sure PostgreSQL, Redis, oha and python3 are there, creates a
# scratch database, starts kefu (with REDIS_URL) and the baselines (src/bin/baseline.rs),
# drives them with oha and the load generator (src/bin/loadgen.rs), and writes the
# results into BENCHMARKS.md (between the "bench.sh" markers; text outside them is kept).
#
#   scripts/bench.sh                    steps 1–4 (about 15 minutes)
#   BENCH_100K=1 scripts/bench.sh       also step 5: 100,000 connections over 6 nodes
#   BENCH_STEPS="1 4" scripts/bench.sh  only some steps (the others keep their old text)
#
# Steps:
#   1. oha -n 100000 -c 100 on /api/config beside the bare actix-web handler returning the
#      same bytes, interleaved A B A B … (BENCH_ROUNDS rounds, default 3);
#   2. 2,000 visitors sending 1 message/s each: send→agent and send→ack latency, kefu and
#      the in-memory baseline interleaved A B A B;
#   3. step test: the highest rate with send→agent p99 < 100 ms (every message acked and
#      delivered), kefu beside the in-memory baseline under the same generator;
#   4. server memory per idle visitor connection at 15,000 connections (VmRSS growth /
#      connections), kefu beside the baseline's echo-style actor, each freshly started;
#   5. (BENCH_100K=1) 100,000 visitor connections over 6 nodes (scripts/cluster.sh) and 6
#      load generator processes, 2,000 of them sending 1 message/s to agents on other
#      nodes (through Redis), with what each node used.
#
# Environment: DATABASE_URL (a database to CREATE DATABASE from; default
# postgres://postgres@127.0.0.1:5432/postgres), REDIS_URL, BENCH_OUT (default
# BENCHMARKS.md), BENCH_ROUNDS, BENCH_NOTE (a sentence for the report, e.g. what else ran
# on the machine), BENCH_KEEP=1 (keep the scratch database and the work directory).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo="$PWD"

# shellcheck source=scripts/lib/services.sh
. scripts/lib/services.sh

steps="${BENCH_STEPS:-1 2 3 4}"
if [[ "${BENCH_100K:-0}" == 1 && "$steps" != *5* ]]; then
    steps="$steps 5"
fi
rounds="${BENCH_ROUNDS:-3}"
out="${BENCH_OUT:-BENCHMARKS.md}"
has_step() { [[ " $steps " == *" $1 "* ]]; }

ensure_build_tools
ensure_postgres
ensure_redis
command -v python3 >/dev/null 2>&1 || kefu_apt_install python3
command -v curl >/dev/null 2>&1 || kefu_apt_install curl
command -v psql >/dev/null 2>&1 || kefu_apt_install postgresql-client
if ! command -v oha >/dev/null 2>&1; then
    echo "bench: installing oha (cargo install oha --locked)"
    cargo install oha --locked
fi
hard="$(ulimit -Hn)"
if [[ "$hard" == unlimited ]]; then ulimit -n 1048576 2>/dev/null || true; else ulimit -n "$hard"; fi
echo "bench: open files limit $(ulimit -n)"

echo "bench: cargo build --release"
cargo build --release --bin kefu --bin loadgen --bin baseline
bin="$repo/target/release"

work="$(mktemp -d /tmp/kefu-bench.XXXXXX)"
echo "bench: results in $work"
base_url="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:${KEFU_REDIS_PORT:-6379}}"
db="kefu_bench_$$"
admin_url="${base_url%/*}/postgres"
db_url="${base_url%/*}/$db"
prefix="bench$$"
kport=6306 hport=6307 wport=6308
admin_email=bench@kefu.test admin_password=bench-password-1
pids=()

cleanup() {
    local p
    for p in "${pids[@]}"; do
        kill -TERM "$p" 2>/dev/null || true
    done
    for p in "${pids[@]}"; do
        wait "$p" 2>/dev/null || true
    done
    if [[ -d "$work/cluster" ]]; then
        KEFU_CLUSTER_DIR="$work/cluster" scripts/cluster.sh stop >/dev/null 2>&1 || true
    fi
    if [[ "${BENCH_KEEP:-0}" != 1 ]]; then
        psql "$admin_url" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
        redis-cli -u "$REDIS_URL" --scan --pattern "$prefix:*" 2>/dev/null |
            xargs -r redis-cli -u "$REDIS_URL" del >/dev/null 2>&1 || true
    fi
}
trap cleanup EXIT

psql "$admin_url" -qc "CREATE DATABASE $db" >/dev/null
echo "bench: scratch database $db"

wait_http() {
    local url="$1" i
    for i in $(seq 1 200); do
        curl -sf -m 1 "$url" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "bench: $url did not answer" >&2
    return 1
}

kefu_pid=""
start_kefu() {
    DATABASE_URL="$db_url" KEFU_REDIS_PREFIX="$prefix" KEFU_BIND="127.0.0.1:$kport" \
        KEFU_NODE_ID=bench KEFU_ADMIN_EMAIL="$admin_email" KEFU_ADMIN_PASSWORD="$admin_password" \
        RUST_LOG="${BENCH_RUST_LOG:-warn}" "$bin/kefu" serve >>"$work/kefu.log" 2>&1 &
    kefu_pid=$!
    pids+=("$kefu_pid")
    wait_http "http://127.0.0.1:$kport/healthz"
}
stop_pid() {
    kill -TERM "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}
ws_pid=""
start_ws_baseline() {
    "$bin/baseline" ws --bind "127.0.0.1:$wport" >>"$work/baseline-ws.log" 2>&1 &
    ws_pid=$!
    pids+=("$ws_pid")
    wait_http "http://127.0.0.1:$wport/healthz"
}
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

start_kefu
token=$(curl -sf -X POST "http://127.0.0.1:$kport/api/auth/login" -H 'content-type: application/json' \
    -d "{\"email\":\"$admin_email\",\"password\":\"$admin_password\"}" | sed 's/.*"token":"\([^"]*\)".*/\1/')
site=$(curl -sf -X POST "http://127.0.0.1:$kport/api/sites" -H "authorization: Bearer $token" \
    -H 'content-type: application/json' -d '{"name":"Bench shop","greeting":"Hi! How can we help?"}' |
    sed 's/.*"widget_key":"\([^"]*\)".*/\1/')
echo "bench: site $site"
lg_kefu=(--url "http://127.0.0.1:$kport" --site "$site" --admin-email "$admin_email" --admin-password "$admin_password")
lg_base=(--url "http://127.0.0.1:$wport" --site x --agent-token a --agent-token b)

# Machine facts for the report.
{
    echo "date=$(date -u +%Y-%m-%dT%H:%MZ)"
    echo "cpu=$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo) × $(nproc)"
    echo "mem=$(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
    echo "kernel=$(uname -r)"
    echo "rustc=$(rustc --version)"
    echo "oha=$(oha --version 2>/dev/null | head -n 1)"
    echo "postgres=$(psql "$admin_url" -tAc 'SHOW server_version' 2>/dev/null)"
    echo "redis=$(redis-cli -u "$REDIS_URL" info server 2>/dev/null | awk -F: '/redis_version/ {print $2}' | tr -d '\r')"
    echo "commit=$(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
    echo "load_before=$(cut -d' ' -f1-3 /proc/loadavg)"
    echo "others=$(ps -eo pcpu=,comm= --sort=-pcpu | awk '$1 > 5 {printf "%s(%s%%) ", $2, $1}' | head -c 300)"
    echo "note=${BENCH_NOTE:-}"
} >"$work/machine.env"

# ---------------------------------------------------------------------------------------
# 1. /api/config beside the bare handler
# ---------------------------------------------------------------------------------------
if has_step 1; then
    echo "bench: step 1 — oha on /api/config beside the bare handler"
    config_url="http://127.0.0.1:$kport/api/config?site=$site"
    curl -sf "$config_url" >"$work/config.json"
    "$bin/baseline" http --bind "127.0.0.1:$hport" --body-file "$work/config.json" >>"$work/baseline-http.log" 2>&1 &
    http_pid=$!
    pids+=("$http_pid")
    wait_http "http://127.0.0.1:$hport/healthz"
    bare_url="http://127.0.0.1:$hport/api/config"
    cmp -s "$work/config.json" <(curl -sf "$bare_url") || { echo "bench: bodies differ" >&2; exit 1; }
    oha -n 5000 -c 100 --no-tui "$config_url" >/dev/null
    oha -n 5000 -c 100 --no-tui "$bare_url" >/dev/null
    for r in $(seq 1 "$rounds"); do
        echo "bench:   round $r: kefu"
        oha -n 100000 -c 100 --no-tui --output-format json "$config_url" >"$work/oha-kefu-$r.json"
        echo "bench:   round $r: bare handler"
        oha -n 100000 -c 100 --no-tui --output-format json "$bare_url" >"$work/oha-bare-$r.json"
    done
    stop_pid "$http_pid"
fi

# ---------------------------------------------------------------------------------------
# 2. 2,000 visitors at 1 msg/s
# ---------------------------------------------------------------------------------------
if has_step 2 || has_step 3; then
    start_ws_baseline
fi
if has_step 2; then
    echo "bench: step 2 — 2,000 visitors at 1 msg/s"
    for r in 1 2; do
        "$bin/loadgen" "${lg_kefu[@]}" --agents 2 --visitors 2000 --rates 1 --duration 30 \
            --ramp-up 10 --warmup 5 --json "$work/lat-kefu-$r.json" | tee -a "$work/loadgen.out"
        "$bin/loadgen" "${lg_base[@]}" --visitors 2000 --rates 1 --duration 30 \
            --ramp-up 10 --warmup 5 --json "$work/lat-base-$r.json" | tee -a "$work/loadgen.out"
    done
fi

# ---------------------------------------------------------------------------------------
# 3. Highest sustained rate, step by step
# ---------------------------------------------------------------------------------------
if has_step 3; then
    echo "bench: step 3 — stepping the rate up"
    # 3,000 visitors × 0.25 … 4.5 msg/s each = 750 … 13,500 msg/s (kefu allows 5/s).
    step_rates="0.25,0.5,0.75,1,1.25,1.5,2,2.5,3,3.5,4,4.5"
    "$bin/loadgen" "${lg_kefu[@]}" --agents 2 --visitors 3000 --rates "$step_rates" --duration 10 \
        --ramp-up 10 --warmup 8 --drain 10 --stop-above-ms 250 --json "$work/step-kefu.json" |
        tee -a "$work/loadgen.out"
    "$bin/loadgen" "${lg_base[@]}" --visitors 3000 --rates "$step_rates" --duration 10 \
        --ramp-up 10 --warmup 0 --drain 10 --stop-above-ms 250 --json "$work/step-base.json" |
        tee -a "$work/loadgen.out"
fi
if [[ -n "$ws_pid" ]]; then
    stop_pid "$ws_pid"
    ws_pid=""
fi

# ---------------------------------------------------------------------------------------
# 4. Memory per idle connection
# ---------------------------------------------------------------------------------------
if has_step 4; then
    echo "bench: step 4 — 15,000 idle visitor connections"
    stop_pid "$kefu_pid"
    start_kefu
    sleep 2
    "$bin/loadgen" --url "http://127.0.0.1:$kport" --site "$site" --agents 0 --visitors 15000 \
        --rates 0 --duration 5 --ramp-up 20 --settle 5 --rss-pid "$kefu_pid" \
        --json "$work/mem-kefu.json" | tee -a "$work/loadgen.out"
    start_ws_baseline
    sleep 2
    "$bin/loadgen" --url "http://127.0.0.1:$wport" --site x --agents 0 --visitors 15000 \
        --rates 0 --duration 5 --ramp-up 20 --settle 5 --rss-pid "$ws_pid" \
        --json "$work/mem-base.json" | tee -a "$work/loadgen.out"
    stop_pid "$ws_pid"
    ws_pid=""
fi

# ---------------------------------------------------------------------------------------
# 5. 100,000 connections over 6 nodes
# ---------------------------------------------------------------------------------------
if has_step 5; then
    echo "bench: step 5 — 100,000 connections over 6 nodes"
    stop_pid "$kefu_pid"
    kefu_pid=""
    cluster_dir="$work/cluster"
    nodes=6 first=6400
    DATABASE_URL="$db_url" KEFU_REDIS_PREFIX="$prefix" KEFU_CLUSTER_DIR="$cluster_dir" \
        KEFU_CLUSTER_PORT=$first KEFU_BIN="$bin/kefu" RUST_LOG=warn \
        KEFU_ADMIN_EMAIL="$admin_email" KEFU_ADMIN_PASSWORD="$admin_password" \
        scripts/cluster.sh "$nodes"
    urls=()
    for i in $(seq 0 $((nodes - 1))); do
        urls+=(--url "http://127.0.0.1:$((first + i))")
    done
    # What each node uses, every 5 s, while the load runs.
    (
        while true; do
            for i in $(seq 0 $((nodes - 1))); do
                port=$((first + i))
                pid=$(cat "$cluster_dir/node-$port.pid" 2>/dev/null) || continue
                [[ -d /proc/$pid ]] || continue
                rss=$(rss_kib "$pid")
                fds=$(ls "/proc/$pid/fd" 2>/dev/null | wc -l)
                cpu=$(awk '{print $14 + $15}' "/proc/$pid/stat")
                wsv=$(curl -s -m 2 "http://127.0.0.1:$port/metrics" |
                    awk '/^websocket_connections\{role="visitor"\}/ {print $2}')
                echo "$(date +%s) $port $pid $rss $fds $cpu ${wsv:-0}"
            done
            sleep 5
        done
    ) >"$work/nodes.tsv" 2>/dev/null &
    sampler=$!
    pids+=("$sampler")
    "$bin/loadgen" "${urls[@]}" --site "$site" --admin-email "$admin_email" \
        --admin-password "$admin_password" --procs 6 --agents 1 --visitors 100000 \
        --senders 2000 --rates 1 --duration 60 --ramp-up 150 --warmup 10 --drain 10 \
        --connect-concurrency 32 --settle 5 --json "$work/c100k.json" | tee -a "$work/loadgen.out"
    sleep 6
    kill "$sampler" 2>/dev/null || true
    KEFU_CLUSTER_DIR="$cluster_dir" scripts/cluster.sh stop
fi

echo "bench: writing $out"
echo "load_after=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$work/machine.env"
BENCH_WORK="$work" BENCH_OUTFILE="$out" BENCH_STEPS_RUN="$steps" BENCH_ROUNDS="$rounds" python3 - <<'PY'
import json, os, glob, re, statistics

work = os.environ["BENCH_WORK"]
out = os.environ["BENCH_OUTFILE"]
steps = os.environ["BENCH_STEPS_RUN"].split()
env = dict(l.rstrip("\n").split("=", 1) for l in open(f"{work}/machine.env") if "=" in l)

def load(p):
    try:
        return json.load(open(p))
    except Exception:
        return None

def ok(b):
    return "**met**" if b else "**missed**"

sections = {}

# ---- 1
if "1" in steps:
    rows, ratios_rps, ratios_p99 = [], [], []
    r = 1
    while os.path.exists(f"{work}/oha-kefu-{r}.json"):
        k, b = load(f"{work}/oha-kefu-{r}.json"), load(f"{work}/oha-bare-{r}.json")
        krps, brps = k["summary"]["requestsPerSec"], b["summary"]["requestsPerSec"]
        kp99, bp99 = k["latencyPercentiles"]["p99"] * 1000, b["latencyPercentiles"]["p99"] * 1000
        kerr = 100000 - k["statusCodeDistribution"].get("200", 0)
        berr = 100000 - b["statusCodeDistribution"].get("200", 0)
        ratios_rps.append(krps / brps)
        ratios_p99.append(kp99 / bp99)
        rows.append(f"| {r} | {krps:,.0f} | {brps:,.0f} | {krps/brps:.0%} | {kp99:.2f} | {bp99:.2f} | {kp99/bp99:.2f}× | {kerr}/{berr} |")
        r += 1
    mr, mp = statistics.median(ratios_rps), statistics.median(ratios_p99)
    sections["1"] = "\n".join([
        "### 1. `/api/config` beside a bare actix-web handler (oha)",
        "",
        "`oha -n 100000 -c 100 --no-tui` against `http://127.0.0.1:6306/api/config?site=KEY` (kefu) and",
        "`http://127.0.0.1:6307/api/config` (`baseline http`, the same bytes from a bare handler),",
        "interleaved kefu, bare, kefu, bare, … after a 5,000-request warm-up of each.",
        "",
        "| round | kefu req/s | bare req/s | ratio | kefu p99 ms | bare p99 ms | p99 ratio | non-200 (kefu/bare) |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"Median ratio: **{mr:.0%}** of the bare handler's requests/s (target ≥ 80 %: {ok(mr >= 0.8)}), "
        f"p99 **{mp:.2f}×** the bare handler's (target ≤ 1.5×: {ok(mp <= 1.5)}).",
    ])

def lat_row(name, p):
    a, k = p["send_to_agent"], p["send_to_ack"]
    return (f"| {name} | {p['offered_msgs_per_s']:,.0f} | {p['acked_msgs_per_s']:,.0f} | {p['acked']}/{p['sent']} | "
            f"{a['p50_ms']:.2f} | {a['p99_ms']:.2f} | {a['p999_ms']:.2f} | {a['max_ms']:.1f} | "
            f"{k['p50_ms']:.2f} | {k['p99_ms']:.2f} |")

LAT_HEAD = ["| run | offered msg/s | acked msg/s | acked/sent | →agent p50 ms | →agent p99 ms | →agent p99.9 ms | →agent max ms | →ack p50 ms | →ack p99 ms |",
            "|---|---|---|---|---|---|---|---|---|---|"]

# ---- 2
if "2" in steps:
    rows, p99s, errs = [], [], []
    for r in (1, 2):
        for who in ("kefu", "base"):
            d = load(f"{work}/lat-{who}-{r}.json")
            if not d or not d["phases"]:
                continue
            p = d["phases"][0]
            label = "kefu" if who == "kefu" else "in-memory baseline"
            rows.append(lat_row(f"{label} #{r}", p))
            if who == "kefu":
                p99s.append(p["send_to_agent"]["p99_ms"])
                errs.append(d["errors_total"] + d["unacked"] + d["undelivered"])
    worst = max(p99s) if p99s else float("nan")
    sections["2"] = "\n".join([
        "### 2. 2,000 visitors sending 1 message/s each",
        "",
        "`loadgen --visitors 2000 --agents 2 --rates 1 --duration 30 --ramp-up 10 --warmup 5` (kefu: durable,",
        "every message committed to PostgreSQL before the ack and the agent frame), interleaved with the",
        "in-memory baseline (`baseline ws`) under the same generator. Latencies are per message from the",
        "send time carried in its `client_msg_id`.",
        "",
        *LAT_HEAD,
        *rows,
        "",
        f"kefu send→agent p99, worst run: **{worst:.1f} ms** (target < 50 ms: {ok(worst < 50)}); "
        f"errors + unacked + undelivered in kefu runs: {sum(errs)}.",
    ])

# ---- 3
def best(d, limit=100.0):
    good = None
    for i, p in enumerate(d["phases"]):
        complete = p["sent"] > 0 and p["acked"] >= 0.999 * p["sent"] and p["delivered"] >= 0.999 * p["sent"]
        if complete and p["send_to_agent"]["p99_ms"] < limit:
            good = (i, p)
    return good

if "3" in steps:
    k, b = load(f"{work}/step-kefu.json"), load(f"{work}/step-base.json")
    lines = ["### 3. Highest sustained rate with send→agent p99 < 100 ms",
             "",
             "One generator process, 3,000 visitors stepping from 0.25 to 4.5 msg/s each (750 → 13,500 msg/s,",
             "10 s per step, below kefu's 5 msg/s per-visitor limit), 2 agents; steps stop after the first",
             "one whose p99 passes 250 ms. A step counts when its send→agent p99 < 100 ms and ≥ 99.9 % of its",
             "messages were acknowledged and reached an agent.", ""]
    for name, d in (("kefu (durable)", k), ("in-memory baseline", b)):
        if not d:
            continue
        lines += [f"**{name}**", "", *LAT_HEAD]
        for i, p in enumerate(d["phases"]):
            lines.append(lat_row(f"step {i+1}: {p['rate_per_visitor']}/s × {d['visitors']}", p))
        lines.append("")
    kb, bb = (best(k) if k else None), (best(b) if b else None)
    kr = kb[1]["acked_msgs_per_s"] if kb else 0
    br = bb[1]["acked_msgs_per_s"] if bb else 0
    top_b = "" if not b or not b["phases"] or not bb or bb[0] < len(b["phases"]) - 1 else \
        " (the baseline passed every step: its ceiling is at least this, the generator's limit)"
    lines.append(f"Highest sustained: kefu **{kr:,.0f} msg/s**, in-memory baseline **{br:,.0f} msg/s**{top_b}; "
                 f"kefu reaches {kr / br:.0%} of the generator-and-machine ceiling." if br else
                 f"Highest sustained: kefu **{kr:,.0f} msg/s**.")
    sections["3"] = "\n".join(lines)

# ---- 4
if "4" in steps:
    k, b = load(f"{work}/mem-kefu.json"), load(f"{work}/mem-base.json")
    rows = []
    for name, d in (("kefu", k), ("baseline echo actor", b)):
        if not d or not d["rss"]:
            continue
        r = d["rss"][0]
        rows.append(f"| {name} | {d['visitors_connected']:,} | {r['before_kib']:,} | {r['after_kib']:,} | "
                    f"{(r['after_kib'] - r['before_kib']) / 1024:.1f} | **{d['rss_per_connection_kib']:.2f}** |")
    kk = k["rss_per_connection_kib"] if k else float("nan")
    sections["4"] = "\n".join([
        "### 4. Server memory per idle visitor connection",
        "",
        "Each server freshly started; `loadgen --agents 0 --visitors 15000 --rates 0 --ramp-up 20 --settle 5",
        "--rss-pid PID` over 8 source addresses; VmRSS from /proc/PID/status before connecting and 5 s",
        "after the last connection. Kernel socket buffers are not in RSS.",
        "",
        "| server | connections | VmRSS before KiB | after KiB | growth MiB | KiB per connection |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        f"kefu: **{kk:.2f} KiB** per idle connection (target ≤ 16 KiB: {ok(kk <= 16)}).",
    ])

# ---- 5
if "5" in steps:
    d = load(f"{work}/c100k.json")
    lines = ["### 5. 100,000 connections over 6 nodes",
             "",
             "`scripts/cluster.sh 6` (ports 6400–6405, one PostgreSQL, one Redis) and",
             "`loadgen --procs 6 --visitors 100000 --senders 2000 --agents 1 --rates 1 --duration 60 --ramp-up 150`",
             "(6 generator processes of ~16,700 sockets each; each process's visitors go round-robin over",
             "all 6 nodes and its agent sits on one node, so 5 of 6 messages cross nodes through Redis).",
             ""]
    if d:
        lines += [f"Connected: **{d['visitors_connected']:,}/{d['visitors']:,}** visitors and "
                  f"{d['agents_connected']}/{d['agents']} agents in {d['connect_seconds']:.0f} s "
                  f"(connect p50 {d['connect']['p50_ms']:.1f} ms, p99 {d['connect']['p99_ms']:.1f} ms); "
                  f"errors {d['errors_total']}, unacked {d['unacked']}, undelivered {d['undelivered']}.", ""]
        if d["errors"]:
            lines += ["Errors: " + ", ".join(f"{k} × {v}" for k, v in d["errors"].items()), ""]
        lines += [*LAT_HEAD]
        for i, p in enumerate(d["phases"]):
            lines.append(lat_row("2,000 senders × 1/s while 100k held", p))
        lines.append("")
    peaks = {}
    try:
        for line in open(f"{work}/nodes.tsv"):
            f = line.split()
            if len(f) < 7:
                continue
            ts, port, pid, rss, fds, cpu, wsv = f[:7]
            p = peaks.setdefault(port, {"rss": 0, "fds": 0, "ws": 0, "cpu0": int(cpu), "cpu": int(cpu)})
            p["rss"] = max(p["rss"], int(rss))
            p["fds"] = max(p["fds"], int(fds))
            p["ws"] = max(p["ws"], int(float(wsv)))
            p["cpu"] = int(cpu)
    except FileNotFoundError:
        pass
    if peaks:
        tick = os.sysconf("SC_CLK_TCK")
        lines += ["What each node used (peaks while the load ran; CPU seconds over the run):", "",
                  "| node | visitor sockets | VmRSS MiB | open files | CPU s |", "|---|---|---|---|---|"]
        for port in sorted(peaks):
            p = peaks[port]
            lines.append(f"| :{port} | {p['ws']:,} | {p['rss']/1024:.0f} | {p['fds']:,} | {(p['cpu']-p['cpu0'])/tick:.0f} |")
        tot = sum(p["ws"] for p in peaks.values())
        lines += ["", f"Sum of visitor sockets at peak: **{tot:,}**."]
    sections["5"] = "\n".join(lines)

# ---- assemble
header = "\n".join([
    "## Results (written by scripts/bench.sh)",
    "",
    f"- run: {env.get('date')}, commit {env.get('commit')}, steps {' '.join(steps)}",
    f"- machine: {env.get('cpu')}, {env.get('mem')}, Linux {env.get('kernel')}; {env.get('rustc')}; "
    f"{env.get('oha')}; PostgreSQL {env.get('postgres')}; Redis {env.get('redis')}",
    f"- server, databases and load generators on the same 2 cores; load average before {env.get('load_before')}, "
    f"after {env.get('load_after')}",
    f"- other busy processes at the start: {env.get('others') or 'none above 5 % CPU'}",
] + ([f"- note: {env['note']}"] if env.get("note") else []))

begin, end = "<!-- bench.sh:begin -->", "<!-- bench.sh:end -->"
old = open(out).read() if os.path.exists(out) else ""
prev = {}
if begin in old and end in old:
    body = old.split(begin, 1)[1].split(end, 1)[0]
    for m in re.finditer(r"(?ms)^### (\d)\. .*?(?=^### \d\. |\Z)", body):
        prev[m.group(1)] = m.group(0).rstrip()
merged = {**prev, **sections}
block = "\n\n".join([header] + [merged[k] for k in sorted(merged)])
if begin in old and end in old:
    new = old.split(begin, 1)[0] + begin + "\n" + block + "\n" + end + old.split(end, 1)[1]
else:
    new = (old.rstrip() + "\n\n" if old else "# kefu benchmarks\n\n") + begin + "\n" + block + "\n" + end + "\n"
open(out, "w").write(new)
print(block)
PY
echo "bench: done; raw results in $work"
