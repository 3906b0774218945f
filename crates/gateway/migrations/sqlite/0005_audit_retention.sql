-- Retention (audit.retention_days): a request entry older than the retention and
-- covered by a signed checkpoint loses its payload but keeps its place in the chain
-- (seq, ts, kind, actor, tenant, prev_hash, hash), marked pruned; verification then
-- checks only its linkage.

ALTER TABLE audit_entries ADD COLUMN pruned INTEGER NOT NULL DEFAULT 0;
CREATE INDEX audit_entries_prunable ON audit_entries (chain, pruned, kind, ts);
