-- Sigstore bundles verified at ingest. A verification is recorded by value, as an OpenPGP
-- one is: the identity policy that allowed the signer (its id, kept after the policy is
-- removed), the certificate's OIDC issuer (its identity is signature_signer), and the
-- signing time the bundle's log entry or timestamp attests.
ALTER TABLE packages ADD COLUMN signature_identity BIGINT;
ALTER TABLE packages ADD COLUMN signature_issuer TEXT;
ALTER TABLE packages ADD COLUMN signature_signed_at TIMESTAMP;

-- Keyless signers trusted for the package names their patterns match (one per line): an
-- OIDC issuer, compared exactly, and an anchored regular expression over the identity.
CREATE TABLE sigstore_identities (
    id         BIGSERIAL PRIMARY KEY,
    patterns   TEXT      NOT NULL,
    issuer     TEXT      NOT NULL,
    san_regex  TEXT      NOT NULL,
    added_by   BIGINT    REFERENCES users (id) ON DELETE SET NULL,
    created_at TIMESTAMP NOT NULL
);

-- The signature an assignment's agents verify, and so the bytes its offers carry:
-- 'stored' (the package's own, whatever its format: what offers carried before),
-- 'openpgp', 'sigstore-bundle', 'cosign-cert-sig' or 'none'.
ALTER TABLE assignments ADD COLUMN signature TEXT NOT NULL DEFAULT 'stored';
