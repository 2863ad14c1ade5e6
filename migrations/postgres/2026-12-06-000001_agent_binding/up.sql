-- Fleet trust: each agent's instance uid belongs to the credential that sent its first
-- message ('token:<id>' or 'user:<id>'; NULL only for agents recorded before this, bound by
-- their next message), and the server keeps what it offered each agent (JSON: name ->
-- version, package hash, time) so that only reports about a real offer steer a rollout.
ALTER TABLE agents ADD COLUMN owner TEXT;
ALTER TABLE agents ADD COLUMN offered TEXT NOT NULL DEFAULT '{}';
CREATE INDEX agents_owner_idx ON agents (owner);

-- Whether the status names the version and package hash the server offered the agent.
ALTER TABLE agent_packages ADD COLUMN answers_offer BOOLEAN NOT NULL DEFAULT FALSE;
