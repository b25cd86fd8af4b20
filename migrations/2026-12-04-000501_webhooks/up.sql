-- Webhooks per site, their durable delivery queue (retries survive restarts), and per-site
-- auto-resolve policies. Filled by the worker (src/worker.rs) from the event stream.
CREATE TABLE webhooks (
    id              uuid PRIMARY KEY,
    site_id         uuid NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    url             text NOT NULL,
    -- Signs every body (HMAC-SHA256); kept in clear because the worker needs it to sign.
    secret          text NOT NULL,
    events          text[] NOT NULL,
    include_private boolean NOT NULL DEFAULT false,
    active          boolean NOT NULL DEFAULT true,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhooks_site ON webhooks (site_id);

CREATE TABLE webhook_deliveries (
    id              bigserial PRIMARY KEY,
    webhook_id      uuid NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_id        bigint NOT NULL,
    event_type      text NOT NULL,
    -- The exact bytes sent, so every retry carries the same body.
    body            text NOT NULL,
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    -- A worker sending it holds it until then; a crashed worker's claim simply expires.
    locked_until    timestamptz,
    last_attempt_at timestamptz,
    last_status     integer,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    UNIQUE (webhook_id, event_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_log ON webhook_deliveries (webhook_id, id DESC);

-- A site's own idle time before auto-resolve (0 = never), over KEFU_AUTO_RESOLVE_SECS.
CREATE TABLE auto_resolve_policies (
    site_id    uuid PRIMARY KEY REFERENCES sites (id) ON DELETE CASCADE,
    idle_secs  integer NOT NULL CHECK (idle_secs >= 0),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Auto-resolve looks for unresolved conversations idle the longest.
CREATE INDEX conversations_unresolved_idle ON conversations (updated_at)
    WHERE status <> 'resolved';
