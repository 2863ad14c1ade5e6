DROP TABLE job_leases;
DROP TABLE rollout_transitions;
DROP TABLE rollout_agents;
ALTER TABLE assignments DROP COLUMN rollout_id;
DROP TABLE rollouts;
