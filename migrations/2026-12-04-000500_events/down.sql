DROP TABLE IF EXISTS event_cursors;
DROP TABLE IF EXISTS events;
DROP FUNCTION IF EXISTS kefu_next_event_id();
