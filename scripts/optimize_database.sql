-- kefu: optimize an existing database (SPEC §6). Upgrade path for databases created before
-- schema 2; a fresh install gets the same schema from the diesel migrations.
--
--   psql -v ON_ERROR_STOP=1 -d "$DATABASE_URL" -f scripts/optimize_database.sql
--
-- What it does, in one transaction (all or nothing):
--   * converts messages to monthly range partitions on created_at, copying every row,
--     with message_keys beside it keeping the unique guarantees a partitioned table cannot
--     (conversation_id + seq, id, the idempotency key); see docs/DATABASE.md;
--   * creates the partitions of the coming months and the functions
--     kefu_ensure_partitions(months_ahead, since) and kefu_purge(older_than);
--   * adds the indexes the hot queries miss;
--   * prunes history queries by exact created_at bounds from message_keys (schema 3);
--   * records the schema-2 and schema-3 migrations as applied, so kefu does not redo them.
-- Idempotent: a second run finds everything in place and changes nothing.
--
-- On a live database: the conversion holds messages (reads and writes) until it commits;
-- kefu answers those requests `unavailable` meanwhile and clients retry. Measured: about
-- 1 s per 40,000 messages on the 2-core development machine (docs/DATABASE.md). It gives
-- up after 10 s waiting for a lock (a long transaction in the way) and can be rerun.

\set ON_ERROR_STOP on
SET client_min_messages = warning;
BEGIN;
SET LOCAL lock_timeout = '10s';

-- kefu-schema-2 BEGIN (this block is also the body of scripts/optimize_database.sql; keep
-- the two identical: scripts/test.d/30-database.sh checks they are)
--
-- Schema 2: messages partitioned by month, uniqueness kept in message_keys, hot-query
-- indexes, partition upkeep and retention. Idempotent: every step looks at the catalog
-- first, so running it on a database that has it already changes nothing. See
-- docs/DATABASE.md for the design.

DO $kefu$
BEGIN
    IF to_regclass('messages') IS NULL OR to_regclass('conversations') IS NULL THEN
        RAISE EXCEPTION 'kefu: the core schema (first migration) is missing in this database';
    END IF;
END
$kefu$;

-- The earliest created_at any message of a conversation may have: the conversation's start
-- less a day of slack for clocks (kefu nodes stamp messages with their own clock). Enforced
-- on every insert (kefu_message_keys_insert) and used by history queries to prune months:
-- `created_at >= kefu_message_floor($1)` removes the earlier partitions when the query
-- starts. PL/pgSQL rather than SQL because PL/pgSQL keeps its plan across calls, where a
-- SQL function is planned again in every query that calls it (0.25 ms against 0.10 ms for
-- a history page, measured).
CREATE OR REPLACE FUNCTION kefu_message_floor(conversation uuid)
RETURNS timestamptz
LANGUAGE plpgsql STABLE PARALLEL SAFE
AS $$
BEGIN
    RETURN (SELECT c.created_at - interval '1 day' FROM conversations c WHERE c.id = conversation);
END
$$;

-- message_keys: one row per message, unpartitioned, so that PostgreSQL itself enforces the
-- uniqueness the partitioned messages table cannot (a unique index there must include
-- created_at): (conversation_id, seq), id, and the idempotency key. Maintained by the
-- statement triggers below, in the same statement as the change to messages.
CREATE OR REPLACE FUNCTION kefu_message_keys_insert()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    INSERT INTO message_keys (conversation_id, seq, id, created_at, sender_type, sender_id,
                              client_msg_id)
    SELECT n.conversation_id, n.seq, n.id, n.created_at, n.sender_type, n.sender_id,
           n.client_msg_id
    FROM kefu_new_messages n;
    -- Same slack as kefu_message_floor (inlined: this runs for every batch the writer commits).
    IF EXISTS (SELECT 1 FROM kefu_new_messages n JOIN conversations c ON c.id = n.conversation_id
               WHERE n.created_at < c.created_at - interval '1 day') THEN
        RAISE EXCEPTION 'message created_at before its conversation began (kefu_message_floor)'
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION kefu_message_keys_delete()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    DELETE FROM message_keys k
    USING kefu_old_messages o
    WHERE k.conversation_id = o.conversation_id AND k.seq = o.seq;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION kefu_message_keys_update()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    -- Transition tables do not pair old and new rows: replace the keys of the rows touched.
    -- The unique indexes are checked at the end of the INSERT, on the final keys.
    DELETE FROM message_keys k
    USING kefu_old_messages o
    WHERE k.conversation_id = o.conversation_id AND k.seq = o.seq;
    INSERT INTO message_keys (conversation_id, seq, id, created_at, sender_type, sender_id,
                              client_msg_id)
    SELECT n.conversation_id, n.seq, n.id, n.created_at, n.sender_type, n.sender_id,
           n.client_msg_id
    FROM kefu_new_messages n;
    IF EXISTS (SELECT 1 FROM kefu_new_messages n JOIN conversations c ON c.id = n.conversation_id
               WHERE n.created_at < c.created_at - interval '1 day') THEN
        RAISE EXCEPTION 'message created_at before its conversation began (kefu_message_floor)'
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION kefu_message_keys_truncate()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    TRUNCATE message_keys;
    RETURN NULL;
END
$$;

-- Monthly partitions (UTC months) named messages_pYYYY_MM: every month from `since` to
-- `months_ahead` months after the current one, and every month that has rows in
-- messages_default (those rows move into their month's new partition). Returns the names
-- created. Partitions are created apart and then attached, which takes only a SHARE UPDATE
-- EXCLUSIVE lock on messages (inserts and reads go on); kefu runs it at start-up and daily.
CREATE OR REPLACE FUNCTION kefu_ensure_partitions(months_ahead integer DEFAULT 3,
                                                  since timestamptz DEFAULT now())
RETURNS SETOF text
LANGUAGE plpgsql
SET lock_timeout = '10s'
AS $$
DECLARE
    month timestamptz;
    hi timestamptz;
    part text;
    parent oid;
BEGIN
    IF months_ahead IS NULL OR months_ahead < 0 OR months_ahead > 120 THEN
        RAISE EXCEPTION 'kefu_ensure_partitions: months_ahead must be between 0 and 120';
    END IF;
    FOR month IN
        SELECT generate_series(date_trunc('month', least(coalesce(since, now()), now()), 'UTC'),
                               date_trunc('month', now(), 'UTC')
                                   + make_interval(months => months_ahead),
                               interval '1 month')
        UNION
        SELECT DISTINCT date_trunc('month', d.created_at, 'UTC') FROM messages_default d
        ORDER BY 1
    LOOP
        month := date_trunc('month', month, 'UTC');
        hi := ((month AT TIME ZONE 'UTC') + interval '1 month') AT TIME ZONE 'UTC';
        part := 'messages_p' || to_char(month AT TIME ZONE 'UTC', 'YYYY_MM');
        IF to_regclass(quote_ident(part)) IS NOT NULL THEN
            SELECT i.inhparent INTO parent FROM pg_inherits i
            WHERE i.inhrelid = to_regclass(quote_ident(part));
            IF parent IS DISTINCT FROM 'messages'::regclass THEN
                RAISE EXCEPTION 'kefu_ensure_partitions: % exists but is not a partition of messages',
                    part;
            END IF;
            CONTINUE;
        END IF;
        EXECUTE format('CREATE TABLE %I (LIKE messages INCLUDING DEFAULTS INCLUDING CONSTRAINTS'
                       ' INCLUDING STORAGE INCLUDING COMPRESSION)', part);
        -- Proves the range to ATTACH, which then does not scan the table.
        EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I CHECK (created_at >= %L AND created_at < %L)',
                       part, part || '_range', month, hi);
        -- Rows that landed in the default partition meanwhile move to their month.
        EXECUTE format('WITH moved AS (DELETE FROM messages_default WHERE created_at >= %L'
                       ' AND created_at < %L RETURNING *) INSERT INTO %I SELECT * FROM moved',
                       month, hi, part);
        EXECUTE format('ALTER TABLE messages ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                       part, month, hi);
        EXECUTE format('ALTER TABLE %I DROP CONSTRAINT %I', part, part || '_range');
        RETURN NEXT part;
    END LOOP;
END
$$;

-- Retention: removes the resolved conversations idle since before now() - older_than, with
-- their messages, and returns what it removed. A month partition that ends before the cutoff
-- and holds only messages of such conversations (or none) is dropped whole; the other
-- messages go row by row. Conversations being written to at this moment are skipped and
-- left for the next run.
CREATE OR REPLACE FUNCTION kefu_purge(older_than interval)
RETURNS TABLE (conversations_removed bigint, messages_removed bigint,
               partitions_dropped text[])
LANGUAGE plpgsql
AS $$
DECLARE
    cutoff timestamptz;
    part record;
    keep boolean;
    n bigint;
BEGIN
    IF older_than IS NULL OR older_than < interval '1 day' THEN
        RAISE EXCEPTION 'kefu_purge: keep at least one day (older_than = %)', older_than;
    END IF;
    cutoff := now() - older_than;
    conversations_removed := 0;
    messages_removed := 0;
    partitions_dropped := '{}';

    -- The doomed conversations, locked until commit: no message can join them meanwhile.
    CREATE TEMP TABLE kefu_purge_doomed (id uuid PRIMARY KEY) ON COMMIT DROP;
    INSERT INTO kefu_purge_doomed
    SELECT c.id FROM conversations c
    WHERE c.status = 'resolved' AND c.resolved_at < cutoff AND c.updated_at < cutoff
    FOR UPDATE SKIP LOCKED;
    ANALYZE kefu_purge_doomed;

    FOR part IN
        SELECT c.oid::regclass AS rel, c.relname::text AS name
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'messages'::regclass
          AND substring(pg_get_expr(c.relpartbound, c.oid) FROM 'TO \(''([^'']+)''\)')::timestamptz
              <= cutoff
        ORDER BY c.relname
    LOOP
        -- SHARE: no row can arrive between the check and the drop.
        EXECUTE format('LOCK TABLE %s IN SHARE MODE', part.rel);
        EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s m WHERE NOT EXISTS'
                       ' (SELECT 1 FROM kefu_purge_doomed d WHERE d.id = m.conversation_id))',
                       part.rel) INTO keep;
        CONTINUE WHEN keep;
        EXECUTE format('SELECT count(*) FROM %s', part.rel) INTO n;
        EXECUTE format('DROP TABLE %s', part.rel);
        messages_removed := messages_removed + n;
        partitions_dropped := partitions_dropped || part.name;
    END LOOP;

    -- The rest row by row (the delete trigger removes their keys).
    DELETE FROM messages m USING kefu_purge_doomed d WHERE m.conversation_id = d.id;
    GET DIAGNOSTICS n = ROW_COUNT;
    messages_removed := messages_removed + n;
    -- Keys of the messages in the dropped partitions.
    DELETE FROM message_keys k USING kefu_purge_doomed d WHERE k.conversation_id = d.id;
    DELETE FROM conversations c USING kefu_purge_doomed d WHERE c.id = d.id;
    GET DIAGNOSTICS n = ROW_COUNT;
    conversations_removed := n;
    DROP TABLE pg_temp.kefu_purge_doomed;
    RETURN NEXT;
END
$$;

-- messages becomes partitioned, with message_keys beside it. The copy runs under an ACCESS
-- EXCLUSIVE lock on messages, taken first: messages' readers and writers wait until the
-- commit (kefu answers them `unavailable` after its database timeout and clients retry),
-- conversations stay readable and writable until the foreign key is added near the end.
-- Taking the strongest lock at once, rather than upgrading to it for the swap, is what keeps
-- this from deadlocking with kefu's writer, which reads messages before inserting.
DO $kefu$
DECLARE
    oldest timestamptz;
BEGIN
    IF (SELECT c.relkind FROM pg_class c WHERE c.oid = 'messages'::regclass) = 'p' THEN
        IF to_regclass('message_keys') IS NULL THEN
            RAISE EXCEPTION 'kefu: messages is partitioned but message_keys is missing';
        END IF;
        RETURN;
    END IF;
    PERFORM set_config('maintenance_work_mem', '256MB', true);
    LOCK TABLE messages IN ACCESS EXCLUSIVE MODE;

    ALTER TABLE messages RENAME TO messages_unpartitioned;
    ALTER INDEX IF EXISTS messages_pkey RENAME TO messages_unpartitioned_pkey;
    ALTER INDEX IF EXISTS messages_id_key RENAME TO messages_unpartitioned_id_key;
    ALTER INDEX IF EXISTS messages_idempotency RENAME TO messages_unpartitioned_idempotency;

    CREATE TABLE messages (
        id              uuid NOT NULL,
        conversation_id uuid NOT NULL,
        seq             bigint NOT NULL,
        sender_type     text NOT NULL,
        sender_id       uuid,
        private         boolean NOT NULL DEFAULT false,
        body            text NOT NULL,
        client_msg_id   text,
        created_at      timestamptz NOT NULL DEFAULT now(),
        CONSTRAINT messages_sender_type_check
            CHECK (sender_type IN ('visitor', 'agent', 'bot', 'system'))
    ) PARTITION BY RANGE (created_at);
    -- Catches rows no month partition covers, so an insert never fails for want of one.
    CREATE TABLE messages_default PARTITION OF messages DEFAULT;
    SELECT min(m.created_at) INTO oldest FROM messages_unpartitioned m;
    PERFORM kefu_ensure_partitions(3, oldest);

    INSERT INTO messages (id, conversation_id, seq, sender_type, sender_id, private, body,
                          client_msg_id, created_at)
    SELECT m.id, m.conversation_id, m.seq, m.sender_type, m.sender_id, m.private, m.body,
           m.client_msg_id, m.created_at
    FROM messages_unpartitioned m;

    CREATE TABLE message_keys (
        conversation_id uuid NOT NULL,
        seq             bigint NOT NULL,
        id              uuid NOT NULL,
        created_at      timestamptz NOT NULL,
        sender_type     text NOT NULL,
        sender_id       uuid,
        client_msg_id   text
    );
    INSERT INTO message_keys (conversation_id, seq, id, created_at, sender_type, sender_id,
                              client_msg_id)
    SELECT m.conversation_id, m.seq, m.id, m.created_at, m.sender_type, m.sender_id,
           m.client_msg_id
    FROM messages_unpartitioned m;
    DROP TABLE messages_unpartitioned;

    -- Indexes are built after the load: one sort per index instead of a million inserts.
    ALTER TABLE message_keys ADD CONSTRAINT message_keys_pkey PRIMARY KEY (conversation_id, seq);
    ALTER TABLE message_keys ADD CONSTRAINT message_keys_id_key UNIQUE (id);
    -- client_msg_id second: the writer looks resends up by (conversation_id, client_msg_id).
    CREATE UNIQUE INDEX message_keys_idempotency
        ON message_keys (conversation_id, client_msg_id, sender_type, sender_id)
        WHERE client_msg_id IS NOT NULL;
    -- History pages: (conversation_id, seq) in each month.
    ALTER TABLE messages ADD CONSTRAINT messages_pkey PRIMARY KEY (conversation_id, seq, created_at);
    ALTER TABLE messages ADD CONSTRAINT messages_conversation_id_fkey
        FOREIGN KEY (conversation_id) REFERENCES conversations (id) ON DELETE CASCADE;

    CREATE TRIGGER messages_keys_insert AFTER INSERT ON messages
        REFERENCING NEW TABLE AS kefu_new_messages
        FOR EACH STATEMENT EXECUTE FUNCTION kefu_message_keys_insert();
    CREATE TRIGGER messages_keys_update AFTER UPDATE ON messages
        REFERENCING OLD TABLE AS kefu_old_messages NEW TABLE AS kefu_new_messages
        FOR EACH STATEMENT EXECUTE FUNCTION kefu_message_keys_update();
    CREATE TRIGGER messages_keys_delete AFTER DELETE ON messages
        REFERENCING OLD TABLE AS kefu_old_messages
        FOR EACH STATEMENT EXECUTE FUNCTION kefu_message_keys_delete();
    CREATE TRIGGER messages_keys_truncate AFTER TRUNCATE ON messages
        FOR EACH STATEMENT EXECUTE FUNCTION kefu_message_keys_truncate();

    ANALYZE messages;
    ANALYZE message_keys;
END
$kefu$;

-- The coming months (a no-op when they exist).
DO $kefu$
BEGIN
    PERFORM kefu_ensure_partitions(3);
END
$kefu$;

-- Hot queries and the indexes serving them (the first migration made all but one):
--   inbox, any assignee        conversations_activity, conversations_status_activity
--   inbox, assignee + status   conversations_assignee (assignee_id, status, updated_at)
--   inbox, assignee, no status conversations_assignee_activity (below)
--   assignment queue           conversations_queue (partial: pending and unassigned)
--   visitor by token           visitors_token_hash_key
--   agent by token             agent_sessions_pkey
--   history                    messages_pkey (conversation_id, seq, created_at) per month
--   resend lookup              message_keys_idempotency
DO $kefu$
BEGIN
    IF to_regclass('conversations_assignee_activity') IS NULL THEN
        CREATE INDEX conversations_assignee_activity
            ON conversations (assignee_id, updated_at DESC, id DESC);
    END IF;
END
$kefu$;
-- kefu-schema-2 END

-- kefu-schema-3 BEGIN (this block is also in scripts/optimize_database.sql, after schema 2;
-- keep the two identical: scripts/test.d/30-database.sh checks they are)
--
-- Schema 3: history queries prune month partitions with the exact created_at range of the
-- messages they want, read from message_keys, instead of a one-sided bound from the
-- conversation's start (kefu_message_floor). A conversation that began a year ago and is
-- resumed today now reads one partition, not every month since. Idempotent.

-- message_keys' primary key carries created_at, so the bounds are index-only reads.
DO $kefu$
BEGIN
    IF pg_get_indexdef('message_keys_pkey'::regclass) NOT LIKE '%INCLUDE (created_at)%' THEN
        ALTER TABLE message_keys
            DROP CONSTRAINT message_keys_pkey,
            ADD CONSTRAINT message_keys_pkey PRIMARY KEY (conversation_id, seq) INCLUDE (created_at);
    END IF;
END
$kefu$;

-- The earliest and the latest created_at among a conversation's messages with
-- after_seq < seq < before_seq (NULL when there is none). History queries filter on
-- `created_at BETWEEN kefu_messages_first_at(…) AND kefu_messages_last_at(…)`, which
-- PostgreSQL evaluates when the query starts to remove every other month partition
-- (`Subplans Removed` in EXPLAIN). PL/pgSQL keeps its plan across calls; a SQL function
-- would be planned again in every query.
CREATE OR REPLACE FUNCTION kefu_messages_first_at(conversation uuid, after_seq bigint,
                                                  before_seq bigint)
RETURNS timestamptz
LANGUAGE plpgsql STABLE PARALLEL SAFE
AS $$
BEGIN
    RETURN (SELECT min(k.created_at) FROM message_keys k
            WHERE k.conversation_id = conversation AND k.seq > after_seq AND k.seq < before_seq);
END
$$;

CREATE OR REPLACE FUNCTION kefu_messages_last_at(conversation uuid, after_seq bigint,
                                                 before_seq bigint)
RETURNS timestamptz
LANGUAGE plpgsql STABLE PARALLEL SAFE
AS $$
BEGIN
    RETURN (SELECT max(k.created_at) FROM message_keys k
            WHERE k.conversation_id = conversation AND k.seq > after_seq AND k.seq < before_seq);
END
$$;

-- The keys triggers without schema 2's created_at floor check, which only kefu_message_floor
-- needed.
CREATE OR REPLACE FUNCTION kefu_message_keys_insert()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    INSERT INTO message_keys (conversation_id, seq, id, created_at, sender_type, sender_id,
                              client_msg_id)
    SELECT n.conversation_id, n.seq, n.id, n.created_at, n.sender_type, n.sender_id,
           n.client_msg_id
    FROM kefu_new_messages n;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION kefu_message_keys_update()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    -- Transition tables do not pair old and new rows: replace the keys of the rows touched.
    -- The unique indexes are checked at the end of the INSERT, on the final keys.
    DELETE FROM message_keys k
    USING kefu_old_messages o
    WHERE k.conversation_id = o.conversation_id AND k.seq = o.seq;
    INSERT INTO message_keys (conversation_id, seq, id, created_at, sender_type, sender_id,
                              client_msg_id)
    SELECT n.conversation_id, n.seq, n.id, n.created_at, n.sender_type, n.sender_id,
           n.client_msg_id
    FROM kefu_new_messages n;
    RETURN NULL;
END
$$;

DROP FUNCTION IF EXISTS kefu_message_floor(uuid);
-- kefu-schema-3 END

-- Tell diesel that this database has schemas 2 and 3, so `kefu migrate` does not run them
-- again.
DO $kefu$
BEGIN
    IF to_regclass('__diesel_schema_migrations') IS NOT NULL THEN
        INSERT INTO __diesel_schema_migrations (version)
        VALUES ('20261130000001'), ('20261130000002')
        ON CONFLICT DO NOTHING;
    END IF;
END
$kefu$;

COMMIT;
