DROP TABLE assignments;
DROP TABLE agents;
