-- What replicas that do not lead an experiment send its leader: outcomes, feedback
-- scores and budget hits, as one JSON array a row.
CREATE TABLE experiment_inbox (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        TEXT NOT NULL,
    config_hash TEXT NOT NULL,
    items       TEXT NOT NULL,
    queued_at   TEXT NOT NULL
);
CREATE INDEX experiment_inbox_name ON experiment_inbox (name, id);
