-- Detached signatures: what the package JSON shows sits on the package row (so every read
-- of a package has it without a join); the bytes, at most 64 KiB, sit beside it and go
-- with the package. A verification is recorded by value (the key's fingerprint and user
-- id, and when): removing the key later keeps the record.
ALTER TABLE packages ADD COLUMN signature_format TEXT;
ALTER TABLE packages ADD COLUMN signature_key TEXT;
ALTER TABLE packages ADD COLUMN signature_signer TEXT;
ALTER TABLE packages ADD COLUMN signature_verified_at TIMESTAMP;

CREATE TABLE package_signatures (
    package_id BIGINT NOT NULL PRIMARY KEY REFERENCES packages (id) ON DELETE CASCADE,
    data       BYTEA  NOT NULL
);

-- OpenPGP keys trusted to sign the package names their patterns match (one per line).
CREATE TABLE signing_keys (
    fingerprint    TEXT      PRIMARY KEY,
    armored        TEXT      NOT NULL,
    user_ids       TEXT      NOT NULL,
    algorithm      TEXT      NOT NULL,
    key_created_at TIMESTAMP,
    expires_at     TIMESTAMP,
    revoked        BOOLEAN   NOT NULL,
    patterns       TEXT      NOT NULL,
    added_by       BIGINT    REFERENCES users (id) ON DELETE SET NULL,
    created_at     TIMESTAMP NOT NULL,
    updated_at     TIMESTAMP NOT NULL
);
