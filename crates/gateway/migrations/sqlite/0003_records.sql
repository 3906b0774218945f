-- Execution records (contract section 5), one row per request, written in batches.

CREATE TABLE records (
    request_id  TEXT PRIMARY KEY,
    ts          TEXT NOT NULL,
    tenant      TEXT,
    status      TEXT NOT NULL,
    body        TEXT NOT NULL      -- the record as JSON
);
CREATE INDEX records_tenant_ts ON records (tenant, ts);
CREATE INDEX records_ts ON records (ts);
