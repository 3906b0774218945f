-- Experiments: each one's live status (stage, counts, test states, decisions) so a
-- restart resumes where it was; actions queued by `asc experiments ...` for the running
-- gateway to apply; feedback scores posted to `POST /v1/feedback`.

CREATE TABLE experiments (
    name         TEXT PRIMARY KEY,
    config_hash  TEXT NOT NULL,       -- the experiment's config version the status belongs to
    status       TEXT NOT NULL,       -- JSON
    updated_at   TEXT NOT NULL
);

CREATE TABLE experiment_commands (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT NOT NULL,
    action      TEXT NOT NULL,        -- promote | rollback | pause | resume
    actor       TEXT NOT NULL,
    queued_at   TEXT NOT NULL,
    done_at     TEXT,
    result      TEXT                  -- JSON: {"ok": true, "state"} or {"ok": false, "error"}
);
CREATE INDEX experiment_commands_pending ON experiment_commands (name, done_at);

CREATE TABLE feedback (
    request_id  TEXT PRIMARY KEY,
    tenant      TEXT NOT NULL,
    score       REAL NOT NULL,
    comment     TEXT,
    ts          TEXT NOT NULL
);
