-- The store on PostgreSQL, shared by every replica: the same tables as SQLite's
-- migrations 0001-0007 arrive at (see ../sqlite), with 64-bit integers throughout.
-- A later change comes as the next number in both directories.

CREATE TABLE tenants (
    name        TEXT PRIMARY KEY,
    spec        TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    tenant      TEXT NOT NULL,
    name        TEXT NOT NULL,
    prefix      TEXT NOT NULL,
    hash        TEXT NOT NULL UNIQUE,
    created_at  TEXT NOT NULL,
    expires_at  TEXT,
    revoked_at  TEXT
);
CREATE INDEX api_keys_tenant ON api_keys (tenant);

CREATE TABLE config_versions (
    seq         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    hash        TEXT NOT NULL,
    loaded_at   TEXT NOT NULL,
    actor       TEXT NOT NULL,
    source      TEXT NOT NULL,
    config      TEXT NOT NULL,
    diff        TEXT NOT NULL
);

CREATE TABLE admin_events (
    seq         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ts          TEXT NOT NULL,
    kind        TEXT NOT NULL,
    actor       TEXT NOT NULL,
    tenant      TEXT,
    payload     TEXT NOT NULL
);

CREATE TABLE spend (
    scope         TEXT NOT NULL,
    period        TEXT NOT NULL,
    spent_micros  BIGINT NOT NULL,
    PRIMARY KEY (scope, period)
);

CREATE TABLE usage (
    tenant             TEXT NOT NULL,
    day                TEXT NOT NULL,
    model              TEXT NOT NULL,
    provider           TEXT NOT NULL,
    tags               TEXT NOT NULL,
    requests           BIGINT NOT NULL,
    prompt_tokens      BIGINT NOT NULL,
    completion_tokens  BIGINT NOT NULL,
    cost_micros        BIGINT NOT NULL,
    PRIMARY KEY (tenant, day, model, provider, tags)
);

CREATE TABLE audit_entries (
    chain      TEXT NOT NULL,
    seq        BIGINT NOT NULL,
    ts         TEXT NOT NULL,
    kind       TEXT NOT NULL,
    actor      TEXT NOT NULL,
    tenant     TEXT,
    payload    TEXT NOT NULL,
    prev_hash  TEXT NOT NULL,
    hash       TEXT NOT NULL,
    pruned     BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (chain, seq)
);
CREATE INDEX audit_entries_prunable ON audit_entries (chain, pruned, kind, ts);

CREATE TABLE audit_checkpoints (
    chain      TEXT NOT NULL,
    seq        BIGINT NOT NULL,
    hash       TEXT NOT NULL,
    ts         TEXT NOT NULL,
    signature  TEXT NOT NULL,
    public_key TEXT NOT NULL,
    PRIMARY KEY (chain, seq)
);

CREATE TABLE records (
    request_id  TEXT PRIMARY KEY,
    ts          TEXT NOT NULL,
    tenant      TEXT,
    status      TEXT NOT NULL,
    chain       TEXT,
    seq         BIGINT,
    body        TEXT
);
CREATE INDEX records_tenant_ts ON records (tenant, ts);
CREATE INDEX records_ts ON records (ts);

CREATE TABLE experiments (
    name         TEXT PRIMARY KEY,
    config_hash  TEXT NOT NULL,
    status       TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);

CREATE TABLE experiment_commands (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        TEXT NOT NULL,
    action      TEXT NOT NULL,
    actor       TEXT NOT NULL,
    queued_at   TEXT NOT NULL,
    done_at     TEXT,
    result      TEXT
);
CREATE INDEX experiment_commands_pending ON experiment_commands (name, done_at);

CREATE TABLE feedback (
    request_id  TEXT PRIMARY KEY,
    tenant      TEXT NOT NULL,
    score       DOUBLE PRECISION NOT NULL,
    comment     TEXT,
    ts          TEXT NOT NULL
);
