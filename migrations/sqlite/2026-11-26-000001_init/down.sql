DROP TABLE users;
DROP TABLE packages;
