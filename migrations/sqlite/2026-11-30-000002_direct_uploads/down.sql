DROP TABLE direct_uploads;
