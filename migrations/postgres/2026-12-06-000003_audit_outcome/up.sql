-- Whether an audited event was done or refused by the gate (role, name scope, ownership).
-- Events recorded before this column are the refusals their action names, or done.
ALTER TABLE audit_events ADD COLUMN outcome TEXT NOT NULL DEFAULT 'done';
UPDATE audit_events SET outcome = 'refused'
 WHERE action IN ('upload_refused', 'login_failed', 'agent_refused');
CREATE INDEX audit_events_outcome_idx ON audit_events (outcome, id);
