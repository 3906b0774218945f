-- Budget spend per scope (`tenant:NAME`, `provider:NAME`) and period, and usage
-- aggregated per tenant, day, model, provider and tag set.

CREATE TABLE spend (
    scope         TEXT NOT NULL,
    period        TEXT NOT NULL,
    spent_micros  INTEGER NOT NULL,
    PRIMARY KEY (scope, period)
);

CREATE TABLE usage (
    tenant             TEXT NOT NULL,
    day                TEXT NOT NULL,      -- YYYY-MM-DD, UTC
    model              TEXT NOT NULL,      -- as requested
    provider           TEXT NOT NULL,      -- provider that served it, '' if none
    tags               TEXT NOT NULL,      -- sorted `k=v` pairs joined by ','
    requests           INTEGER NOT NULL,
    prompt_tokens      INTEGER NOT NULL,
    completion_tokens  INTEGER NOT NULL,
    cost_micros        INTEGER NOT NULL,
    PRIMARY KEY (tenant, day, model, provider, tags)
);
