-- Download statistics. Servers count downloads in memory and add them here in batches
-- (every stats.flush_secs) as increments, so that any number of replicas count into one
-- database. A day's row of a package holds that UTC day's downloads and bytes sent; the
-- package's coordinates are copied into it so that top lists read this table alone.
CREATE TABLE package_downloads (
    package_id BIGINT NOT NULL REFERENCES packages (id) ON DELETE CASCADE,
    day        DATE   NOT NULL,
    name       TEXT   NOT NULL,
    version    TEXT   NOT NULL,
    platform   TEXT   NOT NULL,
    arch       TEXT   NOT NULL,
    downloads  BIGINT NOT NULL CHECK (downloads >= 0),
    bytes      BIGINT NOT NULL CHECK (bytes >= 0),
    PRIMARY KEY (package_id, day)
);
-- Top lists over a window of days.
CREATE INDEX package_downloads_day_idx ON package_downloads (day);

-- Totals per package, shown with it; yanked_at drives the "yanked for D days" retention
-- rule (a package yanked before this migration counts from its last change).
ALTER TABLE packages ADD COLUMN download_count BIGINT NOT NULL DEFAULT 0;
ALTER TABLE packages ADD COLUMN last_downloaded_at TIMESTAMP;
ALTER TABLE packages ADD COLUMN yanked_at TIMESTAMP;
UPDATE packages SET yanked_at = updated_at WHERE NOT is_active;

-- The largest packages, for storage usage.
CREATE INDEX packages_file_size_idx ON packages (file_size);
