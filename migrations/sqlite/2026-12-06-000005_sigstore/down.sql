ALTER TABLE assignments DROP COLUMN signature;
DROP TABLE sigstore_identities;
ALTER TABLE packages DROP COLUMN signature_signed_at;
ALTER TABLE packages DROP COLUMN signature_issuer;
ALTER TABLE packages DROP COLUMN signature_identity;
