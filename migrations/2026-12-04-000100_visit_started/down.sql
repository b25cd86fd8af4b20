ALTER TABLE visitors DROP COLUMN visit_started_at;
