#!/usr/bin/env bash
# Database suite (issue 5): scripts/optimize_database.sql, partitioned messages, retention
# and query plans, on a generated database of KEFU_DB_TEST_MESSAGES messages (1,000,000 by
# default; takes a few minutes). Run by scripts/test.sh after the Rust tests, or alone:
#
#   scripts/test.d/30-database.sh
#
# 1. an "old deployment": the first migration only, filled by scripts/datagen;
# 2. the script, twice: row counts and a checksum of every message unchanged, the second
#    run changes nothing (identical dump);
# 3. a fresh `kefu migrate` ends in the same schema (normalised pg_dump --schema-only);
# 4. EXPLAIN of every hot query uses an index, and the messages queries prune partitions;
# 5. uniqueness after partitioning: duplicate seq / id / client_msg_id refused, across
#    months too, and a racing insert waits for the first and is then refused;
# 6. kefu serves the upgraded database: login, inbox, send, idempotent resend, history,
#    concurrent sends numbered without gaps, a claim;
# 7. kefu_purge removes exactly the conversations past retention and their messages,
#    dropping whole partitions, and nothing else.
#
# Environment: DATABASE_URL (a database to connect to for CREATE DATABASE; default
# postgres://postgres@127.0.0.1:5432/postgres), KEFU_DB_TEST_MESSAGES, KEFU_DB_TEST_KEEP=1
# keeps the databases for inspection.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
root="$PWD"

admin_url="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
admin_url="${admin_url%%\?*}"
base_url="${admin_url%/*}"
messages="${KEFU_DB_TEST_MESSAGES:-1000000}"
suffix="$$"
old_db="kefu_dbt_old_$suffix"
fresh_db="kefu_dbt_fresh_$suffix"
old_url="$base_url/$old_db"
fresh_url="$base_url/$fresh_db"
artifacts="${KEFU_ARTIFACTS_DIR:-$root/artifacts}/database"
mkdir -p "$artifacts"
work="$(mktemp -d)"
server_pid=""

step_start=$SECONDS
say() { printf '[30-database %4ds] %s\n' "$((SECONDS - step_start))" "$*"; }
fail() {
    printf '[30-database] FAILED: %s\n' "$*" >&2
    exit 1
}
psql_at() { # psql_at URL SQL…: tuples only, unaligned
    local url="$1"
    shift
    psql -X -qAt -v ON_ERROR_STOP=1 -d "$url" "$@"
}

cleanup() {
    local rc=$?
    if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    if [[ "${KEFU_DB_TEST_KEEP:-0}" != 1 ]]; then
        for db in "$old_db" "$fresh_db"; do
            psql -X -q -d "$admin_url" -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1 || true
        done
    else
        echo "kept databases $old_db and $fresh_db"
    fi
    rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT

# ---------------------------------------------------------------------------------------
say "building kefu"
cargo build --quiet --bin kefu
kefu="${CARGO_TARGET_DIR:-$root/target}/debug/kefu"

for db in "$old_db" "$fresh_db"; do
    psql -X -q -v ON_ERROR_STOP=1 -d "$admin_url" -c "CREATE DATABASE \"$db\"" >/dev/null
done

# 1. An old deployment: schema of the first migration, recorded as diesel records it.
core_version="20261129000001"
schema2_version="20261130000001"
schema3_version="20261130000002"
psql -X -q -v ON_ERROR_STOP=1 -d "$old_url" -1 -f migrations/2026-11-29-000001_core/up.sql
psql_at "$old_url" -c "CREATE TABLE __diesel_schema_migrations (
        version VARCHAR(50) PRIMARY KEY NOT NULL,
        run_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP);
    INSERT INTO __diesel_schema_migrations (version) VALUES ('$core_version')"
say "generating $messages messages"
scripts/datagen --messages "$messages" "$old_url" | tee "$artifacts/datagen.txt"
have="$(psql_at "$old_url" -c "SELECT count(*) FROM messages")"
((have >= messages)) || fail "datagen made $have messages, wanted $messages"
[[ "$(psql_at "$old_url" -c "SELECT relkind FROM pg_class WHERE oid = 'messages'::regclass")" == r ]] ||
    fail "the old deployment should have an unpartitioned messages table"

# Row counts of every table and a checksum of every message (all columns, in key order).
fingerprint() {
    psql_at "$1" -c "SET TimeZone = 'UTC'" -c "
        SELECT format('sites=%s agents=%s sessions=%s failures=%s visitors=%s conversations=%s messages=%s md5=%s',
            (SELECT count(*) FROM sites), (SELECT count(*) FROM agents),
            (SELECT count(*) FROM agent_sessions), (SELECT count(*) FROM login_failures),
            (SELECT count(*) FROM visitors), (SELECT count(*) FROM conversations),
            (SELECT count(*) FROM messages),
            (SELECT md5(string_agg(md5(concat_ws('|', id, conversation_id, seq, sender_type,
                        sender_id, private, body, client_msg_id, created_at)), ''
                        ORDER BY conversation_id, seq))
             FROM messages))"
}
# The schema, normalised: no comments, owners, grants, psql's \restrict lines or blanks.
schema_dump() { # schema_dump URL [pg_dump options…]
    local url="$1"
    shift
    pg_dump --schema-only --no-owner --no-privileges "$@" -d "$url" |
        grep -v -e '^--' -e '^\\restrict' -e '^\\unrestrict' -e '^$'
}

before="$(fingerprint "$old_url")"
say "before: $before"

# 2. The script, twice.
say "running scripts/optimize_database.sql"
t0=$SECONDS
psql -X -q -v ON_ERROR_STOP=1 -d "$old_url" -f scripts/optimize_database.sql
say "first run took $((SECONDS - t0)) s" | tee "$artifacts/optimize-time.txt"
after1="$(fingerprint "$old_url")"
[[ "$after1" == "$before" ]] || fail "data changed by the script: $after1"
[[ "$(psql_at "$old_url" -c "SELECT relkind FROM pg_class WHERE oid = 'messages'::regclass")" == p ]] ||
    fail "messages is not partitioned after the script"
[[ "$(psql_at "$old_url" -c "SELECT count(*) FROM messages_default")" == 0 ]] ||
    fail "rows were left in messages_default"
[[ "$(psql_at "$old_url" -c "SELECT (SELECT count(*) FROM message_keys) = (SELECT count(*) FROM messages)")" == t ]] ||
    fail "message_keys does not match messages"
schema_dump "$old_url" >"$work/after1.sql"
psql -X -q -v ON_ERROR_STOP=1 -d "$old_url" -f scripts/optimize_database.sql
after2="$(fingerprint "$old_url")"
[[ "$after2" == "$before" ]] || fail "data changed by the second run: $after2"
schema_dump "$old_url" >"$work/after2.sql"
diff -u "$work/after1.sql" "$work/after2.sql" >"$artifacts/second-run.diff" ||
    fail "the second run changed the schema (see $artifacts/second-run.diff)"
[[ "$(psql_at "$old_url" -c "SELECT count(*) FROM __diesel_schema_migrations
        WHERE version IN ('$schema2_version', '$schema3_version')")" == 2 ]] ||
    fail "the script did not record migrations $schema2_version and $schema3_version"
say "script: rows and checksum unchanged, second run changed nothing"

# The script's bodies are the migrations', to the byte.
body() { sed -n "/^-- kefu-schema-$1 BEGIN/,/^-- kefu-schema-$1 END/p" "$2"; }
for pair in 2:migrations/2026-11-30-000001_partition_messages 3:migrations/2026-11-30-000002_message_time_bounds; do
    n="${pair%%:*}"
    dir="${pair#*:}"
    [[ -n "$(body "$n" "$dir/up.sql")" ]] || fail "no schema-$n block in $dir/up.sql"
    diff -u <(body "$n" "$dir/up.sql") <(body "$n" scripts/optimize_database.sql) >"$artifacts/body.diff" ||
        fail "scripts/optimize_database.sql and $dir differ (see $artifacts/body.diff)"
done

# 3. Fresh install: same schema. Month partitions differ by when each was made: compare
# everything else, plus the partitions both have.
DATABASE_URL="$fresh_url" "$kefu" migrate >/dev/null
# Migrations newer than the script's schemas (workflow tables, search index, …) are kefu's
# to apply, at its next start; apply them here so both databases are at the same version.
t0=$SECONDS
DATABASE_URL="$old_url" "$kefu" migrate >/dev/null
say "later migrations on the upgraded database took $((SECONDS - t0)) s"
parts() { psql_at "$1" -c "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent = 'messages'::regclass ORDER BY 1"; }
parts "$old_url" >"$work/parts-old"
parts "$fresh_url" >"$work/parts-fresh"
missing="$(comm -13 "$work/parts-old" "$work/parts-fresh")"
[[ -z "$missing" ]] || fail "the upgraded database lacks partitions $missing"
exclude=()
while IFS= read -r p; do
    exclude+=("--exclude-table=public.$p")
done < <(comm -23 "$work/parts-old" "$work/parts-fresh")
schema_dump "$old_url" "${exclude[@]}" >"$artifacts/schema-upgraded.sql"
schema_dump "$fresh_url" >"$artifacts/schema-fresh.sql"
diff -u "$artifacts/schema-fresh.sql" "$artifacts/schema-upgraded.sql" >"$artifacts/schema.diff" ||
    fail "fresh migrate and upgraded database differ (see $artifacts/schema.diff)"
say "fresh migrate and upgraded database: same schema ($(wc -l <"$artifacts/schema-fresh.sql") lines," \
    "$(wc -l <"$work/parts-fresh") common partitions, $(comm -23 "$work/parts-old" "$work/parts-fresh" | wc -l) older ones)"

# 4. Plans of the hot queries, as kefu sends them (prepared; generic and custom plans).
sample() { psql_at "$old_url" -F'|' -c "$1"; } # read its fields with IFS='|' read

IFS='|' read -r conv conv_last < <(sample "SELECT id, last_seq FROM conversations
    WHERE last_seq >= 10 AND created_at > now() - interval '60 days' ORDER BY id LIMIT 1")
IFS='|' read -r agent < <(sample "SELECT assignee_id FROM conversations WHERE assignee_id IS NOT NULL
    GROUP BY 1 ORDER BY count(*) DESC LIMIT 1")
IFS='|' read -r cur_at cur_id < <(sample "SELECT updated_at, id FROM conversations WHERE status = 'resolved'
    ORDER BY updated_at DESC, id DESC
    OFFSET (SELECT count(*) / 2 FROM conversations WHERE status = 'resolved') LIMIT 1")
IFS='|' read -r token_hash < <(sample "SELECT encode(token_hash, 'hex') FROM visitors ORDER BY id LIMIT 1")
IFS='|' read -r site visitor < <(sample "SELECT site_id, id FROM visitors ORDER BY id LIMIT 1")
IFS='|' read -r session_hash < <(sample "SELECT encode(token_hash, 'hex') FROM agent_sessions LIMIT 1")
IFS='|' read -r dup_conv dup_cid < <(sample "SELECT conversation_id, client_msg_id FROM message_keys
    WHERE client_msg_id IS NOT NULL ORDER BY conversation_id LIMIT 1 OFFSET 100")
maxseq=9223372036854775807
msg_cols="id, conversation_id, seq, sender_type, sender_id, private, body, client_msg_id, created_at"
conv_cols="c.id, c.status, c.updated_at, a.id, a.name"
plans="$artifacts/plans.txt"
: >"$plans"

# explain NAME MODE SQL-PREPARE EXECUTE-ARGS: the plan of one prepared statement
explain() {
    local name="$1" mode="$2" prepare="$3" args="$4"
    psql_at "$old_url" -c "SET plan_cache_mode = $mode" -c "PREPARE q $prepare" \
        -c "EXPLAIN (COSTS OFF) EXECUTE q$args" >"$work/plan"
    cat "$work/plan"
    echo
}
# check NAME MODE PREPARE ARGS REQUIRED-REGEX…: the plan must match every regex, and scan
# no non-empty table sequentially.
check_plan() {
    local name="$1" mode="$2" prepare="$3" args="$4" re
    shift 4
    echo "== $name ($mode)" >>"$plans"
    explain "$name" "$mode" "$prepare" "$args" >>"$plans"
    # Which index matters, not how the planner walks it: a bitmap or index-only scan of the
    # same index counts (the planner picks by the sample's row counts).
    sed -e 's/Bitmap Index Scan on/Index Scan using/' -e 's/Index Only Scan using/Index Scan using/' \
        "$work/plan" >"$work/plan.norm"
    for re in "$@"; do
        grep -Eq -- "$re" "$work/plan.norm" || fail "plan of $name ($mode) lacks /$re/ (see $plans)"
    done
    # No sequential scan of the big tables (agents and sites are small and read whole),
    # except of empty partitions (future months, the default).
    local t
    while read -r t; do
        [[ "$t" =~ ^(conversations|visitors|message_keys|messages_.*)$ ]] || continue
        [[ "$(psql_at "$old_url" -c "SELECT count(*) FROM (SELECT 1 FROM $t LIMIT 1) s")" == 0 ]] ||
            fail "plan of $name ($mode) scans $t sequentially (see $plans)"
    done < <(grep -Eo 'Seq Scan on [a-z0-9_]+' "$work/plan" | awk '{print $4}')
}
for mode in force_generic_plan force_custom_plan; do
    check_plan history_after "$mode" \
        "(uuid, bigint, bigint) AS SELECT $msg_cols FROM messages WHERE conversation_id = \$1
         AND created_at BETWEEN kefu_messages_first_at(\$1, \$2, $maxseq)
                            AND kefu_messages_last_at(\$1, \$2, $maxseq)
         AND seq > \$2 ORDER BY seq LIMIT \$3" \
        "('$conv', 0, 201)" 'Index Scan using messages_p[0-9_]+_pkey' 'Subplans Removed: [1-9]'
    check_plan history_resume "$mode" \
        "(uuid, bigint, bigint) AS SELECT $msg_cols FROM messages WHERE conversation_id = \$1
         AND created_at BETWEEN kefu_messages_first_at(\$1, \$2, $maxseq)
                            AND kefu_messages_last_at(\$1, \$2, $maxseq)
         AND seq > \$2 AND private = false ORDER BY seq LIMIT \$3" \
        "('$conv', $((conv_last - 3)), 201)" 'Index Scan using messages_p[0-9_]+_pkey' 'Subplans Removed: [1-9]'
    check_plan history_before "$mode" \
        "(uuid, bigint, bigint) AS SELECT $msg_cols FROM messages WHERE conversation_id = \$1
         AND created_at BETWEEN kefu_messages_first_at(\$1, 0, \$2)
                            AND kefu_messages_last_at(\$1, 0, \$2)
         AND seq < \$2 ORDER BY seq DESC LIMIT \$3" \
        "('$conv', $conv_last, 51)" 'Index Scan Backward using messages_p[0-9_]+_pkey' 'Subplans Removed: [1-9]'
    check_plan resend_lookup "$mode" \
        "(uuid[], text[]) AS SELECT m.$(sed 's/, /, m./g' <<<"$msg_cols") FROM message_keys k
         JOIN messages m ON m.conversation_id = k.conversation_id AND m.seq = k.seq
          AND m.created_at = k.created_at
         WHERE k.conversation_id = ANY(\$1) AND k.client_msg_id = ANY(\$2)" \
        "(ARRAY['$dup_conv'::uuid], ARRAY['$dup_cid'])" \
        'Index Scan using message_keys_idempotency' 'Index Cond: \(\(conversation_id = k.conversation_id\) AND \(seq = k.seq\) AND \(created_at = k.created_at\)\)'
    check_plan inbox_status "$mode" \
        "(text, bigint) AS SELECT $conv_cols FROM conversations c LEFT JOIN agents a ON c.assignee_id = a.id
         WHERE c.status = \$1 ORDER BY c.updated_at DESC, c.id DESC LIMIT \$2" \
        "('open', 51)" 'Index Scan using conversations_status_activity'
    check_plan inbox_any "$mode" \
        "(bigint) AS SELECT $conv_cols FROM conversations c LEFT JOIN agents a ON c.assignee_id = a.id
         ORDER BY c.updated_at DESC, c.id DESC LIMIT \$1" \
        "(51)" 'Index Scan using conversations_activity'
    check_plan inbox_mine "$mode" \
        "(uuid, bigint) AS SELECT $conv_cols FROM conversations c LEFT JOIN agents a ON c.assignee_id = a.id
         WHERE c.assignee_id = \$1 ORDER BY c.updated_at DESC, c.id DESC LIMIT \$2" \
        "('$agent', 51)" 'Index Scan using conversations_assignee_activity'
    check_plan inbox_mine_status "$mode" \
        "(text, uuid, bigint) AS SELECT $conv_cols FROM conversations c LEFT JOIN agents a ON c.assignee_id = a.id
         WHERE c.status = \$1 AND c.assignee_id = \$2 ORDER BY c.updated_at DESC, c.id DESC LIMIT \$3" \
        "('resolved', '$agent', 51)" 'Index Scan using conversations_assignee'
    check_plan inbox_unassigned "$mode" \
        "(bigint) AS SELECT $conv_cols FROM conversations c LEFT JOIN agents a ON c.assignee_id = a.id
         WHERE c.assignee_id IS NULL ORDER BY c.updated_at DESC, c.id DESC LIMIT \$1" \
        "(51)" 'Index Scan using conversations_(assignee_activity|queue)'
    check_plan inbox_deep_page "$mode" \
        "(text, timestamptz, uuid, bigint) AS SELECT $conv_cols FROM conversations c
         LEFT JOIN agents a ON c.assignee_id = a.id
         WHERE c.status = \$1 AND c.updated_at <= \$2
           AND (c.updated_at < \$2 OR (c.updated_at = \$2 AND c.id < \$3))
         ORDER BY c.updated_at DESC, c.id DESC LIMIT \$4" \
        "('resolved', '$cur_at', '$cur_id', 51)" \
        'Index Cond: \(\(status = .*\) AND \(updated_at <= '
    check_plan assignment_queue "$mode" \
        "(bigint) AS SELECT id FROM conversations WHERE status = 'pending' AND assignee_id IS NULL
         ORDER BY queued_at, id LIMIT \$1 FOR UPDATE" \
        "(10)" 'Index Scan using conversations_queue'
    check_plan visitor_by_token "$mode" \
        "(bytea, uuid) AS SELECT id FROM visitors WHERE token_hash = \$1 AND site_id = \$2" \
        "(decode('$token_hash', 'hex'), '$site')" 'Index Scan using visitors_token_hash_key'
    check_plan latest_conversation "$mode" \
        "(uuid) AS SELECT id FROM conversations WHERE visitor_id = \$1
         ORDER BY created_at DESC, id DESC LIMIT 1" \
        "('$visitor')" 'Index Scan using conversations_visitor'
done
# agent_sessions and agents hold a few hundred rows: PostgreSQL rightly reads them whole;
# with sequential scans priced out the planner must find the index.
check_small() {
    local name="$1" sql="$2" re="$3"
    psql_at "$old_url" -c "SET enable_seqscan = off" -c "EXPLAIN (COSTS OFF) $sql" | tee "$work/plan" >>"$plans"
    sed -e 's/Bitmap Index Scan on/Index Scan using/' -e 's/Index Only Scan using/Index Scan using/' \
        "$work/plan" | grep -Eq -- "$re" || fail "plan of $name lacks /$re/ (see $plans)"
}
check_small agent_by_token "SELECT a.id FROM agent_sessions s JOIN agents a ON a.id = s.agent_id
    WHERE s.token_hash = decode('$session_hash', 'hex')" 'Index Scan using agent_sessions_pkey'
check_small agent_by_email "SELECT id FROM agents WHERE email = 'agent1@datagen.kefu.test'" \
    'Index Scan using agents_email_key'
say "plans: every hot query uses an index, messages queries prune partitions ($plans)"

# 5. Uniqueness after partitioning.
refused() { # refused NAME CONSTRAINT SQL: the statement must fail on CONSTRAINT
    local out
    if out="$(psql -X -q -v ON_ERROR_STOP=1 -d "$old_url" -c "$3" 2>&1)"; then
        fail "$1 was accepted"
    fi
    grep -q "$2" <<<"$out" || fail "$1 failed for another reason: $out"
}
IFS='|' read -r k_conv k_seq k_id k_type k_sender k_cid k_month < <(sample "SELECT conversation_id, seq, id,
    sender_type, coalesce(sender_id::text, 'null'), client_msg_id, date_trunc('month', created_at, 'UTC')::date
    FROM message_keys WHERE client_msg_id IS NOT NULL AND created_at < date_trunc('month', now(), 'UTC')
    ORDER BY conversation_id LIMIT 1")
[[ -n "$k_conv" ]] || fail "no message from an earlier month to test duplicates with"
sender="'$k_sender'"
[[ "$k_sender" == null ]] && sender=NULL
refused "a duplicate seq in another month" message_keys_pkey \
    "INSERT INTO messages (id, conversation_id, seq, sender_type, body, created_at)
     VALUES (gen_random_uuid(), '$k_conv', $k_seq, 'system', 'dup seq', now())"
refused "a duplicate idempotency key in another month" message_keys_idempotency \
    "INSERT INTO messages (id, conversation_id, seq, sender_type, sender_id, body, client_msg_id, created_at)
     VALUES (gen_random_uuid(), '$k_conv', 1000001, '$k_type', $sender, 'dup key', '$k_cid', now())"
refused "a duplicate id in another month" message_keys_id_key \
    "INSERT INTO messages (id, conversation_id, seq, sender_type, body, created_at)
     VALUES ('$k_id', '$k_conv', 1000002, 'system', 'dup id', now())"
# Racing: A inserts seq 2000000 and holds its transaction for 3 s; B inserts the same seq in
# another month, must wait for A and then be refused.
psql -X -q -v ON_ERROR_STOP=1 -d "$old_url" -c "BEGIN" -c "INSERT INTO messages
    (id, conversation_id, seq, sender_type, body, created_at)
    VALUES (gen_random_uuid(), '$k_conv', 2000000, 'system', 'racer A', now())" \
    -c "SELECT pg_sleep(3) AS racer_a_holds" -c "COMMIT" >/dev/null &
racer_a=$!
# B starts once A has inserted and is holding its transaction open.
for _ in $(seq 1 100); do
    [[ "$(psql_at "$old_url" -c "SELECT count(*) FROM pg_stat_activity
        WHERE query LIKE '%racer_a_holds%' AND state = 'active' AND pid <> pg_backend_pid()")" == 1 ]] && break
    sleep 0.1
done
t0=$(date +%s%N)
if out="$(psql -X -q -v ON_ERROR_STOP=1 -d "$old_url" -c "INSERT INTO messages
    (id, conversation_id, seq, sender_type, body, created_at)
    VALUES (gen_random_uuid(), '$k_conv', 2000000, 'system', 'racer B', '$k_month'::timestamptz + interval '1 hour')" 2>&1)"; then
    fail "the racing duplicate was accepted"
fi
waited_ms=$((($(date +%s%N) - t0) / 1000000))
wait "$racer_a" || fail "racer A failed"
grep -q message_keys_pkey <<<"$out" || fail "the racing duplicate failed for another reason: $out"
((waited_ms >= 500)) || fail "the racing insert did not wait for the first (${waited_ms} ms)"
[[ "$(psql_at "$old_url" -c "SELECT body FROM messages WHERE conversation_id = '$k_conv' AND seq = 2000000")" == "racer A" ]] ||
    fail "the first racer's message is not the stored one"
psql_at "$old_url" -c "DELETE FROM messages WHERE conversation_id = '$k_conv' AND seq = 2000000"
say "uniqueness: duplicate seq, id and client_msg_id refused across months; racer waited ${waited_ms} ms, then refused"

# 6. kefu on the upgraded database.
password="db-suite-$(date +%s)-Pass!"
printf '%s\n' "$password" | DATABASE_URL="$old_url" "$kefu" agent create \
    --email dbsuite@kefu.test --name "DB Suite" --role admin >/dev/null
env -u REDIS_URL DATABASE_URL="$old_url" KEFU_BIND=127.0.0.1:0 RUST_LOG=info \
    "$kefu" serve >"$artifacts/server.log" 2>&1 &
server_pid=$!
addr=""
for _ in $(seq 1 100); do
    addr="$(grep -Eo 'listening on http://[0-9.:]+' "$artifacts/server.log" | head -n1 | sed 's|.*http://||')" || true
    [[ -n "$addr" ]] && break
    kill -0 "$server_pid" 2>/dev/null || fail "kefu exited (see $artifacts/server.log)"
    sleep 0.2
done
[[ -n "$addr" ]] || fail "kefu did not start listening (see $artifacts/server.log)"
api="http://$addr"
json() { python3 -c 'import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1], {"d": d}))' "$1"; }
call() { # call METHOD PATH [BODY] → prints "STATUS BODY"
    local method="$1" path="$2" body="${3:-}"
    curl -s -o "$work/body" -w '%{http_code}' -X "$method" "$api$path" \
        -H "authorization: Bearer ${token:-}" -H 'content-type: application/json' \
        ${body:+-d "$body"}
}
token=""
status="$(call POST /api/auth/login "{\"email\":\"dbsuite@kefu.test\",\"password\":\"$password\"}")"
[[ "$status" == 200 ]] || fail "login answered $status: $(cat "$work/body")"
token="$(json 'd["token"]' <"$work/body")"
status="$(call GET '/api/conversations?status=open&limit=20')"
[[ "$status" == 200 ]] || fail "inbox answered $status"
[[ "$(json 'len(d["items"])' <"$work/body")" == 20 ]] || fail "inbox page is not full"
cursor="$(json 'd["next_cursor"]' <"$work/body")"
status="$(call GET "/api/conversations?status=open&limit=20&cursor=$cursor")"
[[ "$status" == 200 ]] || fail "inbox page 2 answered $status"
status="$(call GET "/api/conversations?assignee=me&limit=20")"
[[ "$status" == 200 ]] || fail "my inbox answered $status"

# An open conversation that began in an earlier month: its history spans partitions.
IFS='|' read -r conv last < <(sample "SELECT id, last_seq FROM conversations WHERE status = 'open'
    ORDER BY created_at < date_trunc('month', now(), 'UTC') DESC, last_seq DESC LIMIT 1")
status="$(call POST "/api/conversations/$conv/messages" '{"client_msg_id":"db-suite-1","body":"sent after partitioning","private":false}')"
[[ "$status" == 201 ]] || fail "send answered $status: $(cat "$work/body")"
first_id="$(json 'd["id"]' <"$work/body")"
[[ "$(json 'd["seq"]' <"$work/body")" == $((last + 1)) ]] || fail "the new message is not seq $((last + 1))"
status="$(call POST "/api/conversations/$conv/messages" '{"client_msg_id":"db-suite-1","body":"sent after partitioning","private":false}')"
[[ "$status" == 200 ]] || fail "resend answered $status"
[[ "$(json 'd["id"]' <"$work/body")" == "$first_id" ]] || fail "resend did not return the original"
# The whole history, across months, in seq order without gaps.
status="$(call GET "/api/conversations/$conv/messages?after_seq=0&limit=200")"
[[ "$status" == 200 ]] || fail "history answered $status"
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); s=[m["seq"] for m in d["items"]]
want=list(range(1, min(int(sys.argv[2]), 200) + 1))
sys.exit(0 if s == want else "history seqs %s..., want 1..%d" % (s[:5], len(want)))' "$work/body" "$((last + 1))" ||
    fail "history of $conv is not 1..$((last + 1))"
status="$(call GET "/api/conversations/$conv/messages?after_seq=$last")"
[[ "$(json '[m["id"] for m in d["items"]]' <"$work/body")" == "['$first_id']" ]] ||
    fail "resume after $last does not give exactly the new message"

# Concurrent sends: 30 distinct messages and 10 copies of one resend, all at once.
senders=()
for i in $(seq 1 40); do
    if ((i <= 30)); then
        body="{\"client_msg_id\":\"db-suite-c$i\",\"body\":\"concurrent $i\",\"private\":false}"
    else
        body='{"client_msg_id":"db-suite-same","body":"the same","private":false}'
    fi
    curl -s -o /dev/null -w '%{http_code}\n' -X POST "$api/api/conversations/$conv/messages" \
        -H "authorization: Bearer $token" -H 'content-type: application/json' \
        -d "$body" >"$work/code.$i" &
    senders+=($!)
done
for pid in "${senders[@]}"; do
    wait "$pid" || true
done
cat "$work"/code.* >"$work/codes"
bad="$(grep -cv -e '^200$' -e '^201$' "$work/codes" || true)"
((bad == 0)) || fail "concurrent sends: $bad answers were not 200/201: $(sort "$work/codes" | uniq -c | tr '\n' ' ')"
check="$(psql_at "$old_url" -c "SELECT count(*), min(seq), max(seq), count(DISTINCT seq),
        count(*) FILTER (WHERE client_msg_id = 'db-suite-same')
    FROM messages WHERE conversation_id = '$conv'")"
want="$((last + 32))|1|$((last + 32))|$((last + 32))|1"
[[ "$check" == "$want" ]] || fail "concurrent sends: count|min|max|distinct|same = $check, want $want"
[[ "$(psql_at "$old_url" -c "SELECT last_seq FROM conversations WHERE id = '$conv'")" == $((last + 32)) ]] ||
    fail "last_seq does not match the messages"
pending="$(psql_at "$old_url" -c "SELECT id FROM conversations WHERE status = 'pending' LIMIT 1")"
if [[ -n "$pending" ]]; then
    status="$(call POST "/api/conversations/$pending/assign" '{}')"
    [[ "$status" == 200 ]] || fail "claim answered $status: $(cat "$work/body")"
fi
kill "$server_pid"
wait "$server_pid" || true
server_pid=""
say "kefu on the upgraded database: login, inbox, send, resend, history, 40 concurrent sends (seq $((last + 1))..$((last + 32)), one copy of the resend), claim"
[[ "$(psql_at "$old_url" -c "SELECT (SELECT count(*) FROM message_keys) = (SELECT count(*) FROM messages)")" == t ]] ||
    fail "message_keys does not match messages after the server's writes"

# 7. Retention.
retention="180 days"
doomed_where="status = 'resolved' AND resolved_at < now() - interval '$retention'
              AND updated_at < now() - interval '$retention'"
expected="$(psql_at "$old_url" -c "SELECT count(*) || '|' ||
    (SELECT count(*) FROM messages m WHERE m.conversation_id IN (SELECT id FROM conversations WHERE $doomed_where))
    FROM conversations WHERE $doomed_where")"
kept_before="$(psql_at "$old_url" -c "SET TimeZone = 'UTC'" -c "SELECT count(*) || '|' ||
    md5(string_agg(md5(concat_ws('|', m.id, m.seq, m.body, m.created_at)), '' ORDER BY m.conversation_id, m.seq))
    FROM messages m WHERE m.conversation_id NOT IN (SELECT id FROM conversations WHERE $doomed_where)")"
convs_kept_before="$(psql_at "$old_url" -c "SELECT count(*) || '|' || md5(string_agg(id::text, '' ORDER BY id))
    FROM conversations WHERE NOT ($doomed_where)")"
t0=$SECONDS
result="$(psql_at "$old_url" -c "SELECT conversations_removed || '|' || messages_removed || '|' ||
    array_to_string(partitions_dropped, ',') FROM kefu_purge('$retention')")"
purge_s=$((SECONDS - t0))
[[ "${result%|*}" == "$expected" ]] || fail "kefu_purge removed $result, expected $expected"
dropped="${result##*|}"
[[ -n "$dropped" ]] || fail "kefu_purge dropped no partition"
kept_after="$(psql_at "$old_url" -c "SET TimeZone = 'UTC'" -c "SELECT count(*) || '|' ||
    md5(string_agg(md5(concat_ws('|', m.id, m.seq, m.body, m.created_at)), '' ORDER BY m.conversation_id, m.seq))
    FROM messages m")"
[[ "$kept_after" == "$kept_before" ]] || fail "kefu_purge touched messages it should keep"
convs_kept_after="$(psql_at "$old_url" -c "SELECT count(*) || '|' || md5(string_agg(id::text, '' ORDER BY id))
    FROM conversations")"
[[ "$convs_kept_after" == "$convs_kept_before" ]] || fail "kefu_purge touched conversations it should keep"
[[ "$(psql_at "$old_url" -c "SELECT (SELECT count(*) FROM message_keys) = (SELECT count(*) FROM messages)")" == t ]] ||
    fail "message_keys does not match messages after the purge"
again="$(psql_at "$old_url" -c "SELECT conversations_removed || '|' || messages_removed || '|' ||
    cardinality(partitions_dropped) FROM kefu_purge('$retention')")"
[[ "$again" == "0|0|0" ]] || fail "a second purge removed $again"
say "purge ($retention): removed ${result%|*} (conversations|messages) in ${purge_s} s, dropped partitions $dropped; kept rows unchanged"
echo "30-database: 7 checks passed"
