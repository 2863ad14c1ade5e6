DROP INDEX audit_events_outcome_idx;
ALTER TABLE audit_events DROP COLUMN outcome;
