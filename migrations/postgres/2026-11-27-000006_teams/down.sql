DROP TABLE package_team_owners;
DROP TABLE team_members;
DROP TABLE teams;
