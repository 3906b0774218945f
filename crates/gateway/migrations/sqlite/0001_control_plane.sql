-- Control plane: tenants created through the API, API keys, config versions, and the
-- admin event log (the audit trail's source for admin actions).

CREATE TABLE tenants (
    name        TEXT PRIMARY KEY,
    spec        TEXT NOT NULL,          -- the tenant as the config writes it (JSON)
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    tenant      TEXT NOT NULL,
    name        TEXT NOT NULL,
    prefix      TEXT NOT NULL,          -- first characters, to recognise a key
    hash        TEXT NOT NULL UNIQUE,   -- SHA-256 of the key, hex; the key itself is never stored
    created_at  TEXT NOT NULL,
    expires_at  TEXT,
    revoked_at  TEXT
);
CREATE INDEX api_keys_tenant ON api_keys (tenant);

CREATE TABLE config_versions (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    hash        TEXT NOT NULL,
    loaded_at   TEXT NOT NULL,
    actor       TEXT NOT NULL,
    source      TEXT NOT NULL,
    config      TEXT NOT NULL,          -- the config with secrets redacted (JSON), to diff the next one against
    diff        TEXT NOT NULL           -- unified diff of `config` against the previous version's
);

CREATE TABLE admin_events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    ts          TEXT NOT NULL,
    kind        TEXT NOT NULL,
    actor       TEXT NOT NULL,
    tenant      TEXT,
    payload     TEXT NOT NULL           -- JSON; never key material
);
