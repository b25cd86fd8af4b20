-- kefu data generator: fills an EMPTY kefu database with sites, agents, visitors,
-- conversations and messages shaped like a real deployment. Run it through scripts/datagen
-- (which sets the variables below), or directly:
--
--   psql -X -v ON_ERROR_STOP=1 -v messages=1000000 -v sites=20 -v agents=100 \
--        -v months=12 -v seed=0.42 -d kefu -f scripts/datagen.sql
--
-- Works on the schema of the first migration (unpartitioned messages) and on the
-- partitioned one (it then creates the monthly partitions of the generated period first).
--
-- Shapes:
--   * sites: traffic skewed towards the first few (size ~ rank^-2-ish);
--   * visitors: about one per conversation, drawn at random, so ~37 % never chatted and
--     some came back several times;
--   * conversations: more recent months busier; length 1 + Exp(mean 8) messages with a 1 %
--     tail of 50–300; 0.3 % are long-lived (a message every day or two for up to 90 days);
--     a message every 15 s – 2.5 min inside a chat; everything that ended more than a day
--     ago is resolved, except a few forgotten `open` ones from the last 90 days;
--   * messages: the visitor starts, then visitor / agent / bot / system replies, 5 % of
--     agent messages are private notes, bodies lognormal (median ~27 chars, some up to
--     4000) of mixed English and Chinese text, client_msg_id on visitor and agent messages;
--     inserted in time order, as a live system writes them;
--   * the totals: exactly enough conversations to reach `messages` (the last conversation
--     may overshoot by its length).

\set ON_ERROR_STOP on
\if :{?messages}
\else
\set messages 1000000
\endif
\if :{?sites}
\else
\set sites 20
\endif
\if :{?agents}
\else
\set agents 100
\endif
\if :{?months}
\else
\set months 12
\endif
\if :{?seed}
\else
\set seed 0.42
\endif

SET synchronous_commit = off;
SET work_mem = '256MB';
SET maintenance_work_mem = '512MB';
SET client_min_messages = warning;

BEGIN;

DO $$
BEGIN
    IF to_regclass('public.messages') IS NULL THEN
        RAISE EXCEPTION 'datagen: no kefu schema here; run `kefu migrate` first';
    END IF;
    IF EXISTS (SELECT 1 FROM messages) OR EXISTS (SELECT 1 FROM conversations) THEN
        RAISE EXCEPTION 'datagen: this database already has conversations; datagen fills an empty one';
    END IF;
END $$;

SELECT setseed(:seed) \g /dev/null

-- The generated period, and "now" fixed once so every row agrees on it.
CREATE TEMP TABLE dg_now ON COMMIT DROP AS
SELECT now() AS now, :months * interval '30 days' AS span;

-- Monthly partitions for the whole period when messages is partitioned.
DO $$
BEGIN
    IF to_regprocedure('kefu_ensure_partitions(integer, timestamp with time zone)') IS NOT NULL THEN
        PERFORM kefu_ensure_partitions(3, (SELECT now - span FROM dg_now));
    END IF;
END $$;

-- Text to cut bodies from: ~6 KB of chat-like English and Chinese.
CREATE TEMP TABLE dg_corpus ON COMMIT DROP AS
SELECT string_agg(p, ' ' ORDER BY i) AS txt, length(string_agg(p, ' ' ORDER BY i)) AS len
FROM (
    SELECT i, (ARRAY[
        'Hi, I ordered a jacket last week and it has not arrived yet.',
        'Could you check the status of order 48213 for me please?',
        'Thanks for waiting! I am looking into it right now.',
        '你好，我想问一下我的订单什么时候发货？',
        'The tracking page says delivered but I have nothing.',
        'I can issue a refund or send a replacement, which do you prefer?',
        '好的，谢谢你的帮助！',
        'Is there a discount for students?',
        'Our support hours are 9:00 to 18:00, Monday to Friday.',
        'Can I change the shipping address after paying?',
        '请问可以开发票吗？',
        'I have reset your password, please check your inbox.',
        'The app crashes every time I open the settings page on Android 14.',
        'Let me transfer you to a colleague from billing.',
        '没问题，我们会尽快处理。',
        'ok', 'thanks!', 'great, that worked', 'still broken :(', '👍',
        'Could you send a screenshot of the error?',
        'We shipped it this morning with DHL, tracking number JD014600001234.',
        'Why was I charged twice this month?',
        '这个产品有保修吗？保修期多长？',
        'Sorry for the trouble, I have escalated this to our engineers.'
    ])[1 + (i % 25)] AS p
    FROM generate_series(0, 99) i
) s;

CREATE TEMP TABLE dg_sites ON COMMIT DROP AS
SELECT n, gen_random_uuid() AS id
FROM generate_series(1, :sites) n;

INSERT INTO sites (id, name, widget_key, allowed_origins, greeting, offline_message, created_at, updated_at)
SELECT s.id, 'Site ' || s.n,
       'wk_dg' || substr(md5(s.id::text), 1, 24),
       CASE WHEN s.n % 3 = 0 THEN ARRAY['https://shop' || s.n || '.example'] ELSE '{}' END,
       'Hi! How can we help you today?',
       'We are away right now. Leave a message and we will get back to you.',
       d.now - d.span - interval '30 days', d.now - d.span
FROM dg_sites s, dg_now d;

CREATE TEMP TABLE dg_agents ON COMMIT DROP AS
SELECT n, gen_random_uuid() AS id
FROM generate_series(1, :agents) n;

-- Password hashes are not valid argon2 secrets: create a known agent with `kefu agent create`.
INSERT INTO agents (id, email, name, role, status, max_open, password_hash, disabled,
                    last_seen_at, last_assigned_at, created_at, updated_at)
SELECT a.id, 'agent' || a.n || '@datagen.kefu.test', 'Agent ' || a.n,
       CASE WHEN a.n <= greatest(1, :agents / 20) THEN 'admin' ELSE 'agent' END,
       CASE WHEN r < 0.3 THEN 'online' WHEN r < 0.5 THEN 'away' ELSE 'offline' END,
       5 + (a.n % 6),
       '$argon2id$v=19$m=19456,t=2,p=1$ZGF0YWdlbm5vbG9naW4$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA',
       a.n % 50 = 49,
       d.now - random() * interval '2 days', d.now - random() * interval '1 day',
       d.now - d.span, d.now - random() * interval '10 days'
FROM dg_agents a CROSS JOIN dg_now d CROSS JOIN LATERAL (SELECT random() + a.n * 0 AS r) rr;

-- Conversation plan: enough candidates, then cut at the running total of messages.
CREATE TEMP TABLE dg_conv ON COMMIT DROP AS
WITH c AS (
    SELECT n,
           gen_random_uuid() AS id,
           -- more recent months busier (traffic grew over the period)
           d.now - d.span * power(random(), 1.6) AS created_at,
           CASE WHEN random() < 0.01 THEN 50 + floor(random() * 250)
                ELSE 1 + floor(-ln(1 - random()) * 8) END::int AS msgs,
           random() < 0.003 AS long_lived,
           random() AS r_status,
           random() AS r_agent
    FROM generate_series(1, ceil(:messages / 9.0 * 1.3)::int + 10) n, dg_now d
)
SELECT *, sum(msgs) OVER (ORDER BY n) AS cum FROM c;
DELETE FROM dg_conv WHERE cum - msgs >= :messages;

ALTER TABLE dg_conv ADD COLUMN gap interval, ADD COLUMN visitor_n int, ADD COLUMN status text,
    ADD COLUMN agent_n int, ADD COLUMN ended_at timestamptz;
UPDATE dg_conv c SET
    gap = CASE WHEN c.long_lived THEN least(interval '1 day' + random() * interval '1 day',
                                            interval '90 days' / c.msgs)
               ELSE interval '15 seconds' + random() * interval '135 seconds' END,
    visitor_n = 1 + floor(random() * (SELECT count(*) FROM dg_conv))::int;
-- Nothing in the future: squeeze the gaps of chats that would run past now.
UPDATE dg_conv c SET gap = (d.now - c.created_at) / (c.msgs + 1)
FROM dg_now d WHERE c.created_at + c.msgs * c.gap > d.now;
UPDATE dg_conv c SET
    ended_at = c.created_at + (c.msgs - 1) * c.gap + c.gap / 2,
    status = CASE
        WHEN c.created_at + c.msgs * c.gap < d.now - interval '1 day' THEN
            CASE WHEN c.r_status < 0.02 AND c.created_at > d.now - interval '90 days'
                 THEN 'open' ELSE 'resolved' END
        WHEN c.r_status < 0.15 THEN 'pending'
        WHEN c.r_status < 0.60 THEN 'open'
        ELSE 'resolved' END
FROM dg_now d;
-- Agents: a few busy ones take most chats.
UPDATE dg_conv SET agent_n = CASE WHEN status = 'pending' THEN NULL
                                  ELSE 1 + floor(:agents * power(r_agent, 1.5))::int END;

CREATE INDEX ON dg_conv (visitor_n);
ANALYZE dg_conv;

CREATE TEMP TABLE dg_visitors ON COMMIT DROP AS
SELECT v.n, gen_random_uuid() AS id,
       1 + floor(:sites * power(random(), 2))::int AS site_n,
       coalesce((SELECT min(c.created_at) FROM dg_conv c WHERE c.visitor_n = v.n)
                    - random() * interval '5 minutes',
                d.now - d.span * random()) AS created_at
FROM generate_series(1, (SELECT count(*) FROM dg_conv)::int) v(n), dg_now d;
CREATE UNIQUE INDEX ON dg_visitors (n);
ANALYZE dg_visitors;

INSERT INTO visitors (id, site_id, token_hash, name, email, attributes, created_at, last_seen_at)
SELECT v.id, s.id, sha256(convert_to(v.id::text || random()::text, 'UTF8')),
       CASE WHEN r < 0.4 THEN 'Visitor ' || v.n END,
       CASE WHEN r < 0.3 THEN 'visitor' || v.n || '@mail.example' END,
       CASE WHEN r < 0.5 THEN jsonb_build_object('plan', (ARRAY['free','pro','team'])[1 + v.n % 3],
                                                 'page', '/products/' || (v.n % 500))
            ELSE '{}'::jsonb END,
       v.created_at,
       greatest(v.created_at, coalesce((SELECT max(c.ended_at) FROM dg_conv c WHERE c.visitor_n = v.n),
                                       v.created_at))
FROM dg_visitors v JOIN dg_sites s ON s.n = v.site_n
CROSS JOIN LATERAL (SELECT random() + v.n * 0 AS r) rr;

INSERT INTO conversations (id, site_id, visitor_id, assignee_id, status, last_seq, created_at,
                           updated_at, queued_at, first_response_at, resolved_at, rating,
                           rating_comment)
SELECT c.id, s.id, v.id, a.id, c.status, c.msgs, c.created_at,
       c.ended_at, c.created_at,
       CASE WHEN a.id IS NOT NULL AND c.msgs > 1 THEN c.created_at + c.gap END,
       CASE WHEN c.status = 'resolved' THEN c.ended_at END,
       CASE WHEN c.status = 'resolved' AND c.r_agent < 0.3
            THEN (ARRAY[1,2,3,4,4,5,5,5,5,5])[1 + floor(random() * 10)::int] END,
       CASE WHEN c.status = 'resolved' AND c.r_agent < 0.05 THEN 'quick and helpful' END
FROM dg_conv c
JOIN dg_visitors v ON v.n = c.visitor_n
JOIN dg_sites s ON s.n = v.site_n
LEFT JOIN dg_agents a ON a.n = c.agent_n;

-- Messages, in time order as a live system writes them.
INSERT INTO messages (id, conversation_id, seq, sender_type, sender_id, private, body,
                      client_msg_id, created_at)
SELECT gen_random_uuid(), m.conversation_id, m.seq, m.sender_type,
       CASE m.sender_type WHEN 'visitor' THEN m.visitor_id WHEN 'agent' THEN m.agent_id END,
       m.sender_type = 'agent' AND m.r2 < 0.05,
       m.body,
       CASE WHEN m.sender_type IN ('visitor', 'agent') THEN gen_random_uuid()::text END,
       m.created_at
FROM (
    SELECT c.id AS conversation_id, g.seq, v.id AS visitor_id, a.id AS agent_id, r.r2,
           CASE
               WHEN g.seq = 1 THEN 'visitor'
               WHEN a.id IS NULL THEN CASE WHEN r.r1 < 0.1 THEN 'bot' ELSE 'visitor' END
               WHEN r.r1 < 0.45 THEN 'visitor'
               WHEN r.r1 < 0.93 THEN 'agent'
               WHEN r.r1 < 0.97 THEN 'bot'
               ELSE 'system' END AS sender_type,
           coalesce(nullif(btrim(substr(k.txt, 1 + floor(random() * (k.len - r.blen))::int, r.blen)), ''),
                    'ok') AS body,
           c.created_at + (g.seq - 1) * c.gap + random() * (c.gap / 2) AS created_at
    FROM dg_conv c
    JOIN dg_visitors v ON v.n = c.visitor_n
    LEFT JOIN dg_agents a ON a.n = c.agent_n
    CROSS JOIN dg_corpus k
    CROSS JOIN LATERAL generate_series(1, c.msgs) g(seq)
    CROSS JOIN LATERAL (
        SELECT random() + g.seq * 0 AS r1, random() + g.seq * 0 AS r2,
               least(4000, k.len - 1,
                     greatest(1, floor(exp(3.3 + 0.9 * sqrt(-2 * ln(1 - random()))
                                                 * cos(2 * pi() * random())))))::int AS blen
    ) r
) m
ORDER BY m.created_at;

-- Agent sessions and some failed logins.
INSERT INTO agent_sessions (token_hash, agent_id, created_at, last_used_at)
SELECT sha256(convert_to(a.id::text || g || random()::text, 'UTF8')), a.id,
       d.now - random() * interval '3 days', d.now - random() * interval '12 hours'
FROM dg_agents a CROSS JOIN generate_series(1, 2) g CROSS JOIN dg_now d;

INSERT INTO login_failures (email, failed_at)
SELECT 'agent' || (1 + g % greatest(1, :agents)) || '@datagen.kefu.test',
       d.now - random() * interval '30 days'
FROM generate_series(1, 200) g CROSS JOIN dg_now d;

COMMIT;

VACUUM ANALYZE sites, agents, agent_sessions, login_failures, visitors, conversations, messages;
SELECT to_regclass('public.message_keys') IS NOT NULL AS dg_has_keys \gset
\if :dg_has_keys
VACUUM ANALYZE message_keys;
\endif
