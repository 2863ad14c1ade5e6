DROP TABLE package_owners;
DROP TABLE package_names;
