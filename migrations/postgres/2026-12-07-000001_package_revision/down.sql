DROP TRIGGER packages_change_package_revision ON packages;
DROP TRIGGER packages_package_revision ON packages;
DROP FUNCTION package_revision_bump();
DROP SEQUENCE package_revision;
