DROP TABLE agent_packages;
DROP TABLE assignments;
DROP TABLE agents;
