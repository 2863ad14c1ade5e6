-- What agents are offered depends on assignments and on which packages exist and are
-- active. Every change to those moves this counter on, so the server can tell, with one
-- cheap read, that offers may have changed and push the new ones to the agents connected
-- over WebSocket. (SQLite has one writer at a time: the counter adds no contention.)
CREATE TABLE fleet_revision (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    revision BIGINT  NOT NULL
);
INSERT INTO fleet_revision (id, revision) VALUES (1, 0);

CREATE TRIGGER assignments_insert_fleet_revision AFTER INSERT ON assignments
BEGIN UPDATE fleet_revision SET revision = revision + 1; END;
CREATE TRIGGER assignments_update_fleet_revision AFTER UPDATE ON assignments
BEGIN UPDATE fleet_revision SET revision = revision + 1; END;
CREATE TRIGGER assignments_delete_fleet_revision AFTER DELETE ON assignments
BEGIN UPDATE fleet_revision SET revision = revision + 1; END;
CREATE TRIGGER packages_insert_fleet_revision AFTER INSERT ON packages
BEGIN UPDATE fleet_revision SET revision = revision + 1; END;
CREATE TRIGGER packages_delete_fleet_revision AFTER DELETE ON packages
BEGIN UPDATE fleet_revision SET revision = revision + 1; END;
-- Yank and restore, and a signature attached later (offers carry it); download counts and
-- descriptions change no offer.
CREATE TRIGGER packages_active_fleet_revision AFTER UPDATE OF is_active, signature_format ON packages
BEGIN UPDATE fleet_revision SET revision = revision + 1; END;
