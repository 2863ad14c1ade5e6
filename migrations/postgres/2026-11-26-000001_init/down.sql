DROP TABLE users;
DROP TABLE packages;
DROP TABLE blobs;
