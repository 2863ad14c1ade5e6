-- A package name belongs to its owners: the first to publish it claims it; only owners
-- (and admins) publish new versions of it, yank, restore or describe it, and add or remove
-- owners. A name stays claimed after its last version is deleted.
CREATE TABLE package_names (
    name       TEXT      PRIMARY KEY,
    created_at TIMESTAMP NOT NULL
);

CREATE TABLE package_owners (
    name    TEXT   NOT NULL REFERENCES package_names (name) ON DELETE CASCADE,
    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    PRIMARY KEY (name, user_id)
);
CREATE INDEX package_owners_user_idx ON package_owners (user_id);
