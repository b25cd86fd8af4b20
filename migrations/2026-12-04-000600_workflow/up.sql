-- Customer-service workflow (issue 9): attachments, canned responses, labels, custom
-- attributes' limits live in the code; full-text search over messages and visitors.

-- Trigram indexes for the visitor name/email search (a trusted extension since PG 13).
CREATE EXTENSION IF NOT EXISTS pg_trgm;

-- Uploaded files. The bytes live in the attachment store (a local directory or an S3
-- bucket) under `storage_key`; this row says who may read them. A visitor upload belongs
-- to its visitor from the start; an agent upload is made for one conversation and stays
-- invisible to the visitor until a non-private message carries it.
CREATE TABLE attachments (
    id              uuid PRIMARY KEY,
    site_id         uuid NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    visitor_id      uuid NOT NULL REFERENCES visitors (id) ON DELETE CASCADE,
    conversation_id uuid REFERENCES conversations (id) ON DELETE CASCADE,
    uploader_type   text NOT NULL CHECK (uploader_type IN ('visitor', 'agent')),
    uploader_id     uuid NOT NULL,
    name            text NOT NULL,
    content_type    text NOT NULL,
    size            bigint NOT NULL CHECK (size >= 0),
    storage_key     text NOT NULL,
    -- The first message that carried it, and whether every message that did was private.
    message_id      uuid,
    private         boolean NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX attachments_visitor ON attachments (visitor_id, created_at DESC);
CREATE INDEX attachments_conversation ON attachments (conversation_id)
    WHERE conversation_id IS NOT NULL;

-- A message's attachments, as the clients see them ({id, name, content_type, size, url}),
-- stored with the message so history pages need no join. NULL: none. On a partitioned
-- table this is a catalog change only; month partitions made later copy it (LIKE messages).
ALTER TABLE messages ADD COLUMN attachments jsonb;

-- Canned responses: shared ones (owner_id NULL, managed by admins) for one site or every
-- site (site_id NULL), and each agent's own.
CREATE TABLE canned_responses (
    id         uuid PRIMARY KEY,
    site_id    uuid REFERENCES sites (id) ON DELETE CASCADE,
    owner_id   uuid REFERENCES agents (id) ON DELETE CASCADE,
    shortcut   text NOT NULL,
    title      text NOT NULL DEFAULT '',
    body       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX canned_responses_shortcut ON canned_responses (
    coalesce(owner_id, '00000000-0000-0000-0000-000000000000'),
    coalesce(site_id, '00000000-0000-0000-0000-000000000000'),
    lower(shortcut));

-- Labels on conversations (managed by admins, applied by agents).
CREATE TABLE labels (
    id          uuid PRIMARY KEY,
    name        text NOT NULL,
    color       text NOT NULL DEFAULT '#64748b',
    description text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX labels_name ON labels (lower(name));

CREATE TABLE conversation_labels (
    conversation_id uuid NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    label_id        uuid NOT NULL REFERENCES labels (id) ON DELETE CASCADE,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (conversation_id, label_id)
);
-- The inbox filtered by label.
CREATE INDEX conversation_labels_label ON conversation_labels (label_id, conversation_id);

-- Full-text search over message bodies: English words stemmed by the `english`
-- configuration, plus overlapping bigrams of every run of CJK characters (Chinese has no
-- spaces between words, so `我要退款` is indexed as 我要, 要退, 退款 and a search for 退款
-- finds it). A lone CJK character is indexed as itself. Everything it calls is in
-- pg_catalog, so the index expression works under any search_path (restores, autovacuum).
-- The bigrams come from the run split into characters once, each paired with the next by
-- lead(): linear in the run's length (substr(run, i, 2) for every i rescans the UTF-8 run
-- from its start each time, quadratic: 45 ms for a 4,000-character message, 2 ms this way).
CREATE FUNCTION kefu_search_vector(body text) RETURNS tsvector
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT to_tsvector('english'::regconfig, body) || array_to_tsvector(coalesce(
        (SELECT array_agg(DISTINCT CASE WHEN g.n IS NULL THEN g.c ELSE g.c || g.n END)
           FROM regexp_matches(body,
                '[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]+',
                'g') AS m,
                LATERAL (SELECT t.c, t.i, lead(t.c) OVER (ORDER BY t.i) AS n
                           FROM unnest(pg_catalog.string_to_array(m[1], NULL))
                                WITH ORDINALITY AS t(c, i)) AS g
          WHERE g.n IS NOT NULL OR g.i = 1),
        '{}'::text[]))
$$;
-- Created on the partitioned table: every month partition has it, and the partitions
-- kefu_ensure_partitions attaches later get it built on attach.
CREATE INDEX messages_search ON messages USING gin (kefu_search_vector(body));

-- Visitor search by name or email (substring, case-insensitive).
CREATE INDEX visitors_name_trgm ON visitors USING gin (name gin_trgm_ops);
CREATE INDEX visitors_email_trgm ON visitors USING gin (email gin_trgm_ops);
