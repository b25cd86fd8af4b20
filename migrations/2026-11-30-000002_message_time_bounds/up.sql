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
