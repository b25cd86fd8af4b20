-- Core schema: sites, visitors, agents and their sessions, conversations, messages.

CREATE TABLE sites (
    id              uuid PRIMARY KEY,
    name            text NOT NULL,
    widget_key      text NOT NULL UNIQUE,
    allowed_origins text[] NOT NULL DEFAULT '{}',
    greeting        text NOT NULL DEFAULT '',
    offline_message text NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE visitors (
    id           uuid PRIMARY KEY,
    site_id      uuid NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    token_hash   bytea NOT NULL UNIQUE,
    name         text,
    email        text,
    attributes   jsonb NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX visitors_site ON visitors (site_id, created_at DESC);

CREATE TABLE agents (
    id               uuid PRIMARY KEY,
    email            text NOT NULL UNIQUE,
    name             text NOT NULL,
    role             text NOT NULL CHECK (role IN ('admin', 'agent')),
    status           text NOT NULL DEFAULT 'offline' CHECK (status IN ('online', 'away', 'offline')),
    max_open         integer NOT NULL DEFAULT 5 CHECK (max_open >= 0),
    password_hash    text NOT NULL,
    disabled         boolean NOT NULL DEFAULT false,
    last_seen_at     timestamptz,
    last_assigned_at timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE agent_sessions (
    token_hash   bytea PRIMARY KEY,
    agent_id     uuid NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX agent_sessions_agent ON agent_sessions (agent_id);

CREATE TABLE login_failures (
    id        bigserial PRIMARY KEY,
    email     text NOT NULL,
    failed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX login_failures_email ON login_failures (email, failed_at);

CREATE TABLE conversations (
    id                uuid PRIMARY KEY,
    site_id           uuid NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    visitor_id        uuid NOT NULL REFERENCES visitors (id) ON DELETE CASCADE,
    assignee_id       uuid REFERENCES agents (id) ON DELETE SET NULL,
    status            text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'open', 'resolved')),
    last_seq          bigint NOT NULL DEFAULT 0,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    queued_at         timestamptz NOT NULL DEFAULT now(),
    first_response_at timestamptz,
    resolved_at       timestamptz,
    rating            smallint CHECK (rating BETWEEN 1 AND 5),
    rating_comment    text
);
-- Inbox views: newest activity first, keyset on (updated_at, id).
CREATE INDEX conversations_activity ON conversations (updated_at DESC, id DESC);
CREATE INDEX conversations_status_activity ON conversations (status, updated_at DESC, id DESC);
CREATE INDEX conversations_assignee ON conversations (assignee_id, status, updated_at DESC);
-- The assignment queue: oldest waiting first.
CREATE INDEX conversations_queue ON conversations (queued_at, id)
    WHERE status = 'pending' AND assignee_id IS NULL;
CREATE INDEX conversations_visitor ON conversations (visitor_id, created_at DESC);

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
-- Idempotent sends: one message per (conversation, sender, client_msg_id).
CREATE UNIQUE INDEX messages_idempotency ON messages (conversation_id, sender_type, sender_id, client_msg_id)
    WHERE client_msg_id IS NOT NULL;
