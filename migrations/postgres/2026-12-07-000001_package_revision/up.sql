-- Package reads are served from each replica's memory; this sequence tells a replica that
-- what it keeps may be out of date. Every change a reader of packages can see moves it: a
-- publish, a delete, a yank or restore, a description, a signature. Download counting
-- does not (it would empty every replica's memory on each flush; counts trail anyway).
CREATE SEQUENCE package_revision;

CREATE FUNCTION package_revision_bump() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM nextval('package_revision');
    RETURN NULL;
END
$$;

CREATE TRIGGER packages_package_revision
    AFTER INSERT OR DELETE ON packages
    FOR EACH STATEMENT EXECUTE FUNCTION package_revision_bump();
CREATE TRIGGER packages_change_package_revision
    AFTER UPDATE OF name, version, version_sort, prerelease, platform, arch, file_size,
        checksum, storage_path, filename, description, is_active, yanked_at, updated_at,
        signature_format, signature_key, signature_signer, signature_verified_at,
        signature_identity, signature_issuer, signature_signed_at
    ON packages
    FOR EACH STATEMENT EXECUTE FUNCTION package_revision_bump();
