DROP INDEX packages_file_size_idx;
ALTER TABLE packages DROP COLUMN yanked_at;
ALTER TABLE packages DROP COLUMN last_downloaded_at;
ALTER TABLE packages DROP COLUMN download_count;
DROP TABLE package_downloads;
