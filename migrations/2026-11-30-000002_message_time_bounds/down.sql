-- Back to schema 2: kefu_message_floor and its check in the keys triggers, the primary key
-- of message_keys without created_at.
DROP FUNCTION IF EXISTS kefu_messages_first_at(uuid, bigint, bigint);
DROP FUNCTION IF EXISTS kefu_messages_last_at(uuid, bigint, bigint);
ALTER TABLE message_keys
    DROP CONSTRAINT message_keys_pkey,
    ADD CONSTRAINT message_keys_pkey PRIMARY KEY (conversation_id, seq);

CREATE OR REPLACE FUNCTION kefu_message_floor(conversation uuid)
RETURNS timestamptz
LANGUAGE plpgsql STABLE PARALLEL SAFE
AS $$
BEGIN
    RETURN (SELECT c.created_at - interval '1 day' FROM conversations c WHERE c.id = conversation);
END
$$;

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
