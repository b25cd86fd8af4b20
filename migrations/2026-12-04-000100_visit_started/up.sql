-- When the visitor's current visit began (time on site in the agents' "online now" list).
-- A visit ends after 30 minutes without being seen; the next connection starts a new one.
ALTER TABLE visitors ADD COLUMN visit_started_at timestamptz NOT NULL DEFAULT now();
UPDATE visitors SET visit_started_at = last_seen_at;
