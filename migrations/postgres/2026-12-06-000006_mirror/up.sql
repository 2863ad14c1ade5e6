-- The mirror of upstream releases: where each asset it follows stands, shared by every
-- replica (one runs the mirror at a time, under the job lease 'mirror'). A published
-- asset is not fetched again; a failed one is retried on the next run.
CREATE TABLE mirror_assets (
    source     TEXT      NOT NULL,
    version    TEXT      NOT NULL,
    platform   TEXT      NOT NULL,
    arch       TEXT      NOT NULL,
    url        TEXT      NOT NULL,
    state      TEXT      NOT NULL CHECK (state IN ('published', 'failed')),
    detail     TEXT      NOT NULL,
    -- The package it became (kept as a number: the package may be deleted later).
    package_id BIGINT,
    attempts   INTEGER   NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    PRIMARY KEY (source, version, platform, arch)
);
