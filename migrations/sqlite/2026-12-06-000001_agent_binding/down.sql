ALTER TABLE agent_packages DROP COLUMN answers_offer;
DROP INDEX agents_owner_idx;
ALTER TABLE agents DROP COLUMN offered;
ALTER TABLE agents DROP COLUMN owner;
