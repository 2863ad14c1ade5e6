-- Uploads in flight: a row per object being written, made before its first byte is stored
-- and removed when its package row commits (in the same transaction) or its object is
-- discarded. The uploader touches it while it works; reconciliation never deletes an
-- object whose marker is fresh. Times are the database's clock, the one every replica
-- shares.
CREATE TABLE uploads_in_flight (
    storage_path TEXT      PRIMARY KEY,
    started_at   TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    touched_at   TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
);
