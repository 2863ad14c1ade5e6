-- Agents that speak OpAMP to the registry: what each last reported, so that any replica
-- answers any agent. Attributes, health and package statuses are JSON written and read by
-- agentpkg (crates/store/src/fleet.rs).
CREATE TABLE agents (
    instance_uid     TEXT      PRIMARY KEY CHECK (length(instance_uid) = 32),
    sequence_num     BIGINT    NOT NULL,
    capabilities     BIGINT    NOT NULL,
    identifying      TEXT      NOT NULL,
    non_identifying  TEXT      NOT NULL,
    health           TEXT,
    package_statuses TEXT      NOT NULL,
    first_seen       TIMESTAMP NOT NULL,
    last_seen        TIMESTAMP NOT NULL,
    connected        BOOLEAN   NOT NULL,
    disconnects      BIGINT    NOT NULL DEFAULT 0,
    disconnected_at  TIMESTAMP
);
-- Most recently seen first.
CREATE INDEX agents_last_seen_idx ON agents (last_seen);
