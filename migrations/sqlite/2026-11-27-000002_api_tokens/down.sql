DROP TABLE api_tokens;
ALTER TABLE users DROP COLUMN credentials_version;
