-- Append-only record of who did what. Nothing in the application updates or deletes a row.
CREATE TABLE audit_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          TIMESTAMP NOT NULL,
    -- Who: the user (by id and by name, which outlives the user) and the API token used.
    actor_id    BIGINT,
    actor       TEXT,
    token_name  TEXT,
    action      TEXT      NOT NULL,
    package     TEXT,
    package_id  BIGINT,
    -- The user acted upon (user and role changes).
    subject     TEXT,
    address     TEXT,
    request_id  TEXT,
    -- A short, secret-free detail: the version, the new role, the error code.
    detail      TEXT      NOT NULL DEFAULT ''
);
CREATE INDEX audit_events_at_idx ON audit_events (at);
CREATE INDEX audit_events_actor_idx ON audit_events (actor, at);
CREATE INDEX audit_events_package_idx ON audit_events (package, at);
