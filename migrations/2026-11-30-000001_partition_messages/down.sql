-- Back to the first migration's schema: messages unpartitioned again (every row copied back),
-- without message_keys, the schema-2 functions and the added index.
LOCK TABLE messages IN ACCESS EXCLUSIVE MODE;
ALTER TABLE messages RENAME TO messages_partitioned;
ALTER INDEX messages_pkey RENAME TO messages_partitioned_pkey;
-- Free the names the table below gets.
ALTER TABLE messages_partitioned RENAME CONSTRAINT messages_sender_type_check TO messages_partitioned_sender_type_check;
ALTER TABLE messages_partitioned DROP CONSTRAINT messages_conversation_id_fkey;

CREATE TABLE messages (
    id              uuid NOT NULL UNIQUE,
    conversation_id uuid NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    seq             bigint NOT NULL,
    sender_type     text NOT NULL CHECK (sender_type IN ('visitor', 'agent', 'bot', 'system')),
    sender_id       uuid,
    private         boolean NOT NULL DEFAULT false,
    body            text NOT NULL,
    client_msg_id   text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (conversation_id, seq)
);
CREATE UNIQUE INDEX messages_idempotency ON messages (conversation_id, sender_type, sender_id, client_msg_id)
    WHERE client_msg_id IS NOT NULL;
INSERT INTO messages (id, conversation_id, seq, sender_type, sender_id, private, body,
                      client_msg_id, created_at)
SELECT id, conversation_id, seq, sender_type, sender_id, private, body, client_msg_id, created_at
FROM messages_partitioned;

DROP TABLE messages_partitioned;
DROP TABLE message_keys;
DROP FUNCTION kefu_purge(interval);
DROP FUNCTION kefu_ensure_partitions(integer, timestamptz);
DROP FUNCTION kefu_message_keys_insert();
DROP FUNCTION kefu_message_keys_update();
DROP FUNCTION kefu_message_keys_delete();
DROP FUNCTION kefu_message_keys_truncate();
DROP FUNCTION kefu_message_floor(uuid);
DROP INDEX conversations_assignee_activity;
