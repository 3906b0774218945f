-- A record's JSON is stored once: as the payload of its audit entry (which the chain
-- hashes). The records table becomes what records are found by (id, time, tenant,
-- status) and where their entry is (chain, seq). Rows written before this migration
-- keep their JSON in `body` (chain and seq NULL).

CREATE TABLE records_v7 (
    request_id  TEXT PRIMARY KEY,
    ts          TEXT NOT NULL,
    tenant      TEXT,
    status      TEXT NOT NULL,
    chain       TEXT,
    seq         INTEGER,
    body        TEXT
);
INSERT INTO records_v7 (request_id, ts, tenant, status, body)
    SELECT request_id, ts, tenant, status, body FROM records;
DROP TABLE records;
ALTER TABLE records_v7 RENAME TO records;
CREATE INDEX records_tenant_ts ON records (tenant, ts);
CREATE INDEX records_ts ON records (ts);
