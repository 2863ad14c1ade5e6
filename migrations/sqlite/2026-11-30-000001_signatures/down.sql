DROP TABLE signing_keys;
DROP TABLE package_signatures;
ALTER TABLE packages DROP COLUMN signature_verified_at;
ALTER TABLE packages DROP COLUMN signature_signer;
ALTER TABLE packages DROP COLUMN signature_key;
ALTER TABLE packages DROP COLUMN signature_format;
