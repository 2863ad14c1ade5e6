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
    disconnected_at  TIMESTAMP,
    -- The all_packages_hash last offered (hex), and why nothing is offered when so.
    offered_hash     TEXT,
    offer_note       TEXT
);
-- Most recently seen first.
CREATE INDEX agents_last_seen_idx ON agents (last_seen);

-- Packages offered to the agents an assignment selects (selector: JSON object of
-- attribute values all required). When two select an agent under the same offer_as, the
-- older one (lower id) wins.
CREATE TABLE assignments (
    id                BIGSERIAL PRIMARY KEY,
    package           TEXT      NOT NULL,
    version           TEXT      NOT NULL,
    offer_as          TEXT      NOT NULL,
    selector          TEXT      NOT NULL,
    rollout_percent   INTEGER   NOT NULL CHECK (rollout_percent BETWEEN 0 AND 100),
    max_failure_ratio DOUBLE PRECISION NOT NULL CHECK (max_failure_ratio >= 0 AND max_failure_ratio <= 1),
    v_prefix          BOOLEAN   NOT NULL,
    paused            TEXT,
    created_at        TIMESTAMP NOT NULL,
    updated_at        TIMESTAMP NOT NULL
);

-- Each agent's package statuses, one row per package name, as last reported: what rollouts
-- count (failures among the agents offered a version) and the status view reads.
CREATE TABLE agent_packages (
    instance_uid      TEXT      NOT NULL REFERENCES agents (instance_uid) ON DELETE CASCADE,
    name              TEXT      NOT NULL,
    offered_version   TEXT      NOT NULL,
    agent_has_version TEXT      NOT NULL,
    status            TEXT      NOT NULL,
    error_message     TEXT      NOT NULL,
    updated_at        TIMESTAMP NOT NULL,
    PRIMARY KEY (instance_uid, name)
);
CREATE INDEX agent_packages_offer_idx ON agent_packages (name, offered_version);
