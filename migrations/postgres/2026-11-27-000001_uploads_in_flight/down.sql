DROP TABLE uploads_in_flight;
