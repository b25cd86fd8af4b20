-- The durable event stream (outbox): every change that side effects (webhooks, the bot,
-- reports) care about is written here in the same transaction as the change itself.
--
-- Ids sort like (txid, order within the transaction): the high bits are the writing
-- transaction's id, the low 20 bits count the events of that transaction. A reader that
-- returns only rows with txid < pg_snapshot_xmin(pg_current_snapshot()) — transactions all
-- finished — in id order is then gap-free: every row committed later has a larger id. (A
-- plain sequence is not: a transaction holding id 5 may commit after one holding id 6 was
-- read, and a reader past 6 would never see 5.)
CREATE FUNCTION kefu_next_event_id()
RETURNS bigint
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    n integer;
BEGIN
    -- A transaction-local counter (set_config(…, true) is reset at the transaction's end).
    n := coalesce(nullif(current_setting('kefu.event_n', true), '')::integer, 0) + 1;
    IF n >= 1048576 THEN
        RAISE EXCEPTION 'more than 1048575 events in one transaction';
    END IF;
    PERFORM set_config('kefu.event_n', n::text, true);
    RETURN (pg_current_xact_id()::text::bigint << 20) + n;
END
$$;

CREATE TABLE events (
    id              bigint PRIMARY KEY DEFAULT kefu_next_event_id(),
    txid            xid8 NOT NULL DEFAULT pg_current_xact_id(),
    kind            text NOT NULL,
    site_id         uuid NOT NULL,
    conversation_id uuid NULL,
    payload         jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);
-- Retention prunes by age.
CREATE INDEX events_created ON events (created_at);

-- Where each consumer of the stream is; retention keeps what any of them has not passed.
CREATE TABLE event_cursors (
    name       text PRIMARY KEY,
    after_id   bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);
