DROP TRIGGER packages_active_fleet_revision ON packages;
DROP TRIGGER packages_fleet_revision ON packages;
DROP TRIGGER assignments_fleet_revision ON assignments;
DROP FUNCTION fleet_revision_bump();
DROP SEQUENCE fleet_revision;
