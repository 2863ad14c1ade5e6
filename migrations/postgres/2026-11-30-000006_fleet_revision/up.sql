-- What agents are offered depends on assignments and on which packages exist and are
-- active. Every change to those moves this sequence on, whichever replica (or tool) made
-- it, so each replica can tell, with one cheap read, that offers may have changed and push
-- the new ones to the agents connected to it over WebSocket. A sequence takes no lock: a
-- busy upload path never waits on it.
CREATE SEQUENCE fleet_revision;

CREATE FUNCTION fleet_revision_bump() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM nextval('fleet_revision');
    RETURN NULL;
END
$$;

CREATE TRIGGER assignments_fleet_revision
    AFTER INSERT OR UPDATE OR DELETE ON assignments
    FOR EACH STATEMENT EXECUTE FUNCTION fleet_revision_bump();
CREATE TRIGGER packages_fleet_revision
    AFTER INSERT OR DELETE ON packages
    FOR EACH STATEMENT EXECUTE FUNCTION fleet_revision_bump();
-- Yank and restore, and a signature attached later (offers carry it); download counts and
-- descriptions change no offer.
CREATE TRIGGER packages_active_fleet_revision
    AFTER UPDATE OF is_active, signature_format ON packages
    FOR EACH STATEMENT EXECUTE FUNCTION fleet_revision_bump();
