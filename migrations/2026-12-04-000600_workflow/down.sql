DROP INDEX IF EXISTS visitors_email_trgm;
DROP INDEX IF EXISTS visitors_name_trgm;
DROP INDEX IF EXISTS messages_search;
DROP FUNCTION IF EXISTS kefu_search_vector(text);
DROP TABLE IF EXISTS conversation_labels;
DROP TABLE IF EXISTS labels;
DROP TABLE IF EXISTS canned_responses;
ALTER TABLE messages DROP COLUMN IF EXISTS attachments;
DROP TABLE IF EXISTS attachments;
-- pg_trgm stays: other objects may use it.
