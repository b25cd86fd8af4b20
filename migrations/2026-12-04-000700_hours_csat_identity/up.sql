-- Business hours, identity verification and CSAT ratings (issue #9).

-- A site's weekly schedule with its time zone and closed dates (JSON, validated by the
-- server: src/domain/business_hours.rs); NULL means always open.
ALTER TABLE sites ADD COLUMN business_hours jsonb;
-- HMAC-SHA256 key the host page signs `user_id` with; NULL: identity verification off.
-- Never returned by the API after it was generated.
ALTER TABLE sites ADD COLUMN identity_secret text;

-- A verified identity of the host site's user: one visitor per (site, user_id), whatever
-- device or browser it connects from.
ALTER TABLE visitors ADD COLUMN user_id text;
CREATE UNIQUE INDEX visitors_site_user ON visitors (site_id, user_id) WHERE user_id IS NOT NULL;

-- Further tokens of one visitor: each device of a verified user holds its own token.
CREATE TABLE visitor_tokens (
    token_hash bytea PRIMARY KEY,
    visitor_id uuid NOT NULL REFERENCES visitors (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX visitor_tokens_visitor ON visitor_tokens (visitor_id);

-- One CSAT rating per conversation (changeable for a while after resolution).
CREATE TABLE csat_ratings (
    conversation_id uuid PRIMARY KEY REFERENCES conversations (id) ON DELETE CASCADE,
    rating          smallint NOT NULL CHECK (rating BETWEEN 1 AND 5),
    comment         text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX csat_ratings_created ON csat_ratings (created_at);

-- Ratings given before this table existed.
INSERT INTO csat_ratings (conversation_id, rating, comment, created_at, updated_at)
SELECT id, rating, rating_comment, coalesce(resolved_at, updated_at), coalesce(resolved_at, updated_at)
FROM conversations WHERE rating IS NOT NULL
ON CONFLICT DO NOTHING;
