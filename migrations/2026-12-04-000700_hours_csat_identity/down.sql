DROP TABLE csat_ratings;
DROP TABLE visitor_tokens;
DROP INDEX visitors_site_user;
ALTER TABLE visitors DROP COLUMN user_id;
ALTER TABLE sites DROP COLUMN identity_secret;
ALTER TABLE sites DROP COLUMN business_hours;
