#!/usr/bin/env bash
# Latency of kefu's hot read queries, as kefu issues them (prepared statements, the same
# SQL shapes as src/db/messages.rs and src/db/conversations.rs), on the database at hand:
#
#   scripts/db-bench.sh [--samples N] [--writes] [DATABASE_URL]
#
# Picks N random conversations / agents / cursors (fixed seed), runs every query once to
# warm the caches, then again while psql times each statement; prints p50, p99, mean and
# max in milliseconds per query. Before schema 2 (no message_keys table) the history
# queries are the old ones, without the created_at bounds, and the inbox keyset has
# no plain updated_at bound: each database is measured with the queries its kefu sends.
#
#   history_first   GET /api/conversations/{id}/messages (after_seq=0, limit 200)
#   history_resume  visitor `resume` near the end (after_seq = last_seq - 3, no notes)
#   resume_recent   the same on a conversation active in the last 7 days (the usual case)
#   inbox_open      GET /api/conversations?status=open (first page of 50)
#   inbox_mine      GET /api/conversations?assignee=me (an agent's inbox, any status)
#   inbox_deep      GET /api/conversations?status=resolved&cursor=… (a page up to 200 pages
#                   deep: the cursor is one of the newest 10,000 resolved conversations)
#   insert_batch20  (with --writes) one INSERT of 20 messages into 20 conversations, as the
#                   writer commits a batch; inside a transaction that is rolled back, so the
#                   database is left as it was
set -euo pipefail

samples=1000
writes=0
url="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/kefu}"
while (($#)); do
    case "$1" in
    --samples) samples="$2"; shift 2 ;;
    --writes) writes=1; shift ;;
    -h | --help) sed -n '2,23p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) url="$1"; shift ;;
    esac
done
[[ "$samples" =~ ^[1-9][0-9]*$ ]] || { echo "db-bench: --samples must be a positive integer" >&2; exit 2; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
q() { psql -X -qAt -v ON_ERROR_STOP=1 -d "$url" "$@"; }

schema2="$(q -c "SELECT to_regclass('message_keys') IS NOT NULL")"
if [[ "$schema2" == t ]]; then
    # As src/db/messages.rs sends them (the bound's seq range is the query's).
    after_bounds="AND created_at BETWEEN kefu_messages_first_at(\$1, \$2, 9223372036854775807)
        AND kefu_messages_last_at(\$1, \$2, 9223372036854775807)"
    keyset_bound="AND c.updated_at <= \$2"
else
    after_bounds=""
    keyset_bound=""
fi
conv_cols="c.id, c.site_id, c.visitor_id, c.status, c.last_seq, c.created_at, c.updated_at,
    c.first_response_at, c.resolved_at, c.rating, c.rating_comment, a.id, a.name"
msg_cols="id, conversation_id, seq, sender_type, sender_id, private, body, client_msg_id, created_at"

cat >"$work/prepare.sql" <<EOF
PREPARE history_first(uuid, bigint, bigint) AS
  SELECT $msg_cols FROM messages
  WHERE conversation_id = \$1 $after_bounds AND seq > \$2 ORDER BY seq LIMIT \$3;
PREPARE history_resume(uuid, bigint, bigint) AS
  SELECT $msg_cols FROM messages
  WHERE conversation_id = \$1 $after_bounds AND seq > \$2 AND private = false ORDER BY seq LIMIT \$3;
PREPARE resume_recent(uuid, bigint, bigint) AS
  SELECT $msg_cols FROM messages
  WHERE conversation_id = \$1 $after_bounds AND seq > \$2 AND private = false ORDER BY seq LIMIT \$3;
PREPARE inbox_open(text, bigint) AS
  SELECT $conv_cols FROM conversations c LEFT JOIN agents a ON c.assignee_id = a.id
  WHERE c.status = \$1 ORDER BY c.updated_at DESC, c.id DESC LIMIT \$2;
PREPARE inbox_mine(uuid, bigint) AS
  SELECT $conv_cols FROM conversations c LEFT JOIN agents a ON c.assignee_id = a.id
  WHERE c.assignee_id = \$1 ORDER BY c.updated_at DESC, c.id DESC LIMIT \$2;
PREPARE inbox_deep(text, timestamptz, uuid, bigint) AS
  SELECT $conv_cols FROM conversations c LEFT JOIN agents a ON c.assignee_id = a.id
  WHERE c.status = \$1 $keyset_bound
    AND (c.updated_at < \$2 OR (c.updated_at = \$2 AND c.id < \$3))
  ORDER BY c.updated_at DESC, c.id DESC LIMIT \$4;
EOF

# The statements, in a fixed random order (same seed on every database).
q >"$work/run.sql" <<EOF
SELECT setseed(0.5);
WITH conv AS (
    SELECT id, last_seq, updated_at, status, row_number() OVER () AS n
    FROM (SELECT id, last_seq, updated_at, status FROM conversations ORDER BY id) s
), picks AS (
    SELECT g AS k,
           1 + floor(random() * (SELECT count(*) FROM conv))::bigint AS n1,
           1 + floor(random() * (SELECT count(*) FROM conv))::bigint AS n2
    FROM generate_series(1, $samples) g
), agent_list AS (
    SELECT assignee_id AS id, row_number() OVER (ORDER BY assignee_id) AS n
    FROM conversations WHERE assignee_id IS NOT NULL GROUP BY assignee_id
), recent AS (
    SELECT id, last_seq, row_number() OVER (ORDER BY id) AS n
    FROM conversations WHERE updated_at > now() - interval '7 days'
), resolved AS (
    -- Cursors within the newest 10,000 resolved conversations: up to 200 pages deep.
    SELECT updated_at, id, row_number() OVER (ORDER BY id) AS n
    FROM (SELECT updated_at, id FROM conversations WHERE status = 'resolved'
          ORDER BY updated_at DESC, id DESC LIMIT 10000) r
)
SELECT line FROM (
    SELECT p.k, 1 AS o, format('EXECUTE history_first(%L, 0, 201);', c.id) AS line
    FROM picks p JOIN conv c ON c.n = p.n1
    UNION ALL
    SELECT p.k, 2, format('EXECUTE history_resume(%L, %s, 201);', c.id, greatest(c.last_seq - 3, 0))
    FROM picks p JOIN conv c ON c.n = p.n2
    UNION ALL
    SELECT p.k, 3, format('EXECUTE resume_recent(%L, %s, 201);', c.id, greatest(c.last_seq - 3, 0))
    FROM picks p JOIN recent c ON c.n = 1 + (p.n1 % (SELECT count(*) FROM recent))
    UNION ALL
    SELECT p.k, 3, 'EXECUTE inbox_open(''open'', 51);' FROM picks p
    UNION ALL
    SELECT p.k, 4, format('EXECUTE inbox_mine(%L, 51);', a.id)
    FROM picks p JOIN agent_list a ON a.n = 1 + (p.n1 % (SELECT count(*) FROM agent_list))
    UNION ALL
    SELECT p.k, 5, format('EXECUTE inbox_deep(''resolved'', %L, %L, 51);', r.updated_at, r.id)
    FROM picks p JOIN resolved r ON r.n = 1 + (p.n2 % (SELECT count(*) FROM resolved))
) s ORDER BY k, o;
EOF
# The first line is setseed's empty result.
sed -i '1{/^$/d}' "$work/run.sql"

{
    cat "$work/prepare.sql"
    echo '\o /dev/null'
    cat "$work/run.sql" # warm-up
    echo '\timing on'
    cat "$work/run.sql"
} >"$work/bench.sql"

q -f "$work/bench.sql" | grep '^Time:' | awk '{print $2}' >"$work/times"
# Pair each time with its query name (the timed pass is run.sql once more, in order).
sed -E 's/^EXECUTE ([a-z_]+)\(.*/\1/' "$work/run.sql" | paste - "$work/times" >"$work/named"

if ((writes)); then
    # Batches of 20 new messages for 20 conversations each (seq far above any existing),
    # timed inside one transaction that is rolled back.
    q -c "SELECT format('INSERT INTO messages (id, conversation_id, seq, sender_type, sender_id,
            private, body, client_msg_id, created_at)
        SELECT gen_random_uuid(), c.id, 10000000 + %s, ''agent'', NULL, false, ''a bench reply'',
            ''bench-%s-'' || c.id, now()
        FROM unnest(%L::uuid[]) c(id);', b, b, array_agg(id))
        FROM (SELECT id, (row_number() OVER (ORDER BY id) - 1) / 20 AS b
              FROM (SELECT id FROM conversations ORDER BY md5(id::text) LIMIT 20 * $samples) s) t
        GROUP BY b ORDER BY b" >"$work/writes.sql"
    {
        echo '\o /dev/null'
        echo 'BEGIN;'
        echo '\timing on'
        cat "$work/writes.sql"
        echo '\timing off'
        echo 'ROLLBACK;'
    } >"$work/wbench.sql"
    q -f "$work/wbench.sql" | grep '^Time:' | awk '{print "insert_batch20\t" $2}' >>"$work/named"
fi

printf '%-16s %8s %8s %8s %8s %8s\n' query n p50_ms p99_ms mean_ms max_ms
for name in history_first history_resume resume_recent inbox_open inbox_mine inbox_deep insert_batch20; do
    awk -v n="$name" '$1 == n {print $2}' "$work/named" | sort -g >"$work/$name"
    awk -v name="$name" '{v[NR] = $1; s += $1}
        END {
            if (NR == 0) exit
            p50 = v[int((NR - 1) * 0.50) + 1]; p99 = v[int((NR - 1) * 0.99) + 1]
            printf "%-16s %8d %8.3f %8.3f %8.3f %8.3f\n", name, NR, p50, p99, s / NR, v[NR]
        }' "$work/$name"
done
