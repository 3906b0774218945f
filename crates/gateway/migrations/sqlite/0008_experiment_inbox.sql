-- What replicas that do not lead an experiment send its leader: outcomes, feedback
-- scores and budget hits, as one JSON array a row (used on PostgreSQL, where replicas
-- share the store; kept here so both schemas stay one).
CREATE TABLE experiment_inbox (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT NOT NULL,
    config_hash TEXT NOT NULL,
    items       TEXT NOT NULL,
    queued_at   TEXT NOT NULL
);
CREATE INDEX experiment_inbox_name ON experiment_inbox (name, id);
