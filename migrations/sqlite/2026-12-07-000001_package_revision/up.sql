-- Package reads are served from the server's memory; this counter tells it (or another
-- process on the same file) that what it keeps may be out of date. Every change a reader
-- of packages can see moves it: a publish, a delete, a yank or restore, a description, a
-- signature. Download counting does not (counts trail anyway).
CREATE TABLE package_revision (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    revision BIGINT  NOT NULL
);
INSERT INTO package_revision (id, revision) VALUES (1, 0);

CREATE TRIGGER packages_insert_package_revision AFTER INSERT ON packages
BEGIN UPDATE package_revision SET revision = revision + 1; END;
CREATE TRIGGER packages_delete_package_revision AFTER DELETE ON packages
BEGIN UPDATE package_revision SET revision = revision + 1; END;
CREATE TRIGGER packages_change_package_revision
AFTER UPDATE OF name, version, version_sort, prerelease, platform, arch, file_size,
    checksum, storage_path, filename, description, is_active, yanked_at, updated_at,
    signature_format, signature_key, signature_signer, signature_verified_at,
    signature_identity, signature_issuer, signature_signed_at
ON packages
BEGIN UPDATE package_revision SET revision = revision + 1; END;
