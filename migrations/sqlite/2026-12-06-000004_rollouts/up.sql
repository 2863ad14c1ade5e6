-- Progressive rollouts (crates/fleet/src/rollout): a plan that moves an assignment to a
-- new version wave by wave, promoting on health and reverting on failure.
CREATE TABLE rollouts (
    id             INTEGER   PRIMARY KEY AUTOINCREMENT,
    assignment_id  BIGINT    NOT NULL REFERENCES assignments (id) ON DELETE CASCADE,
    version        TEXT      NOT NULL,
    -- The version the assignment offered before (its stable version), if any.
    from_version   TEXT,
    -- The plan as the operator wrote it (JSON, written and read by agentpkg).
    plan           TEXT      NOT NULL,
    state          TEXT      NOT NULL,
    cause          TEXT      NOT NULL,
    -- The current wave, or the next one to start (0-based), and whether it started.
    wave           INTEGER   NOT NULL DEFAULT 0,
    wave_started   BOOLEAN   NOT NULL DEFAULT FALSE,
    approved_wave  INTEGER,
    -- Transitions so far: a step is taken by the one writer whose update finds the step
    -- it read (so no step is taken twice, whichever replicas evaluate).
    step           BIGINT    NOT NULL DEFAULT 0,
    active         BOOLEAN   NOT NULL,
    created_by     TEXT      NOT NULL,
    created_at     TIMESTAMP NOT NULL,
    updated_at     TIMESTAMP NOT NULL
);
-- An assignment has at most one rollout the engine still moves.
CREATE UNIQUE INDEX rollouts_one_active_idx ON rollouts (assignment_id) WHERE active;
CREATE INDEX rollouts_assignment_idx ON rollouts (assignment_id, id);

-- The assignment's latest rollout, while it governs the agents it moved.
ALTER TABLE assignments ADD COLUMN rollout_id BIGINT;

-- The agents a rollout offered its version, and where each stands. Times are on the
-- rollout's clock (the wall clock unless fleet.rollout_time_scale speeds it up).
CREATE TABLE rollout_agents (
    rollout_id       BIGINT    NOT NULL REFERENCES rollouts (id) ON DELETE CASCADE,
    instance_uid     TEXT      NOT NULL,
    wave             INTEGER   NOT NULL,
    previous_version TEXT      NOT NULL,
    phase            TEXT      NOT NULL,
    attempts         INTEGER   NOT NULL DEFAULT 1,
    offered_at       TIMESTAMP NOT NULL,
    installed_at     TIMESTAMP,
    healthy_since    TIMESTAMP,
    last_report_at   TIMESTAMP,
    failure          TEXT,
    failure_message  TEXT      NOT NULL DEFAULT '',
    failed_at        TIMESTAMP,
    retry_at         TIMESTAMP,
    acknowledged     BOOLEAN   NOT NULL DEFAULT FALSE,
    PRIMARY KEY (rollout_id, instance_uid)
);
CREATE INDEX rollout_agents_uid_idx ON rollout_agents (instance_uid);
CREATE INDEX rollout_agents_phase_idx ON rollout_agents (rollout_id, phase, wave);

-- Every step a rollout took, with its cause and, when a person took it, who.
CREATE TABLE rollout_transitions (
    rollout_id BIGINT    NOT NULL REFERENCES rollouts (id) ON DELETE CASCADE,
    step       BIGINT    NOT NULL,
    at         TIMESTAMP NOT NULL,
    state      TEXT      NOT NULL,
    wave       INTEGER   NOT NULL,
    cause      TEXT      NOT NULL,
    actor      TEXT,
    PRIMARY KEY (rollout_id, step)
);

-- Periodic jobs that must run on one replica at a time hold a lease here.
CREATE TABLE job_leases (
    name   TEXT      PRIMARY KEY,
    holder TEXT      NOT NULL,
    until  TIMESTAMP NOT NULL
);

-- Offers change when a rollout changes state or wave, when it offers its version to more
-- agents, or offers a failed install again (attempts).
CREATE TRIGGER rollouts_insert_fleet_revision AFTER INSERT ON rollouts
BEGIN UPDATE fleet_revision SET revision = revision + 1; END;
CREATE TRIGGER rollouts_delete_fleet_revision AFTER DELETE ON rollouts
BEGIN UPDATE fleet_revision SET revision = revision + 1; END;
CREATE TRIGGER rollouts_update_fleet_revision AFTER UPDATE OF state, wave, wave_started ON rollouts
BEGIN UPDATE fleet_revision SET revision = revision + 1; END;
CREATE TRIGGER rollout_agents_insert_fleet_revision AFTER INSERT ON rollout_agents
BEGIN UPDATE fleet_revision SET revision = revision + 1; END;
CREATE TRIGGER rollout_agents_update_fleet_revision AFTER UPDATE OF attempts ON rollout_agents
BEGIN UPDATE fleet_revision SET revision = revision + 1; END;
