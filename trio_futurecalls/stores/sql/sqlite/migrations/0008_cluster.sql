-- Cluster-wide coordination (trio_futurecalls._cluster): the workers on this file,
-- the limits every one of them obeys, the tokens those limits hand out, and paused
-- classes. As in the PostgreSQL store's 0008 (read its comment); here every write
-- transaction is serialized (BEGIN IMMEDIATE), so a claim that counts free tokens in
-- its transaction takes them without any other claim in between. Times are integer
-- microseconds since the epoch, bounded as in 0003.

CREATE TABLE futurecalls_workers (
    id TEXT PRIMARY KEY CHECK (typeof(id) = 'text' AND length(id) BETWEEN 1 AND 1000),
    host TEXT NOT NULL CHECK (typeof(host) = 'text' AND length(host) <= 255),
    pid INTEGER NOT NULL CHECK (typeof(pid) = 'integer'),
    started_at INTEGER NOT NULL CHECK (
        typeof(started_at) = 'integer'
        AND started_at BETWEEN -62135510400000000 AND 253402214399999999
    ),
    heartbeat_at INTEGER NOT NULL CHECK (
        typeof(heartbeat_at) = 'integer'
        AND heartbeat_at BETWEEN -62135510400000000 AND 253402214399999999
    ),
    expires_at INTEGER NOT NULL CHECK (
        typeof(expires_at) = 'integer'
        AND expires_at BETWEEN -62135510400000000 AND 253402214399999999
    ),
    running INTEGER NOT NULL DEFAULT 0 CHECK (typeof(running) = 'integer' AND running >= 0),
    limits TEXT NOT NULL DEFAULT '{}' CHECK (typeof(limits) = 'text' AND length(limits) <= 1048576)
);

CREATE TABLE futurecalls_cluster_limits (
    kind TEXT NOT NULL CHECK (kind IN ('concurrency', 'rate')),
    name TEXT NOT NULL CHECK (typeof(name) = 'text' AND length(name) BETWEEN 1 AND 200),
    tokens INTEGER NOT NULL CHECK (typeof(tokens) = 'integer' AND tokens BETWEEN 1 AND 100000),
    per_us INTEGER CHECK (
        (kind = 'rate') = (per_us IS NOT NULL)
        AND (per_us IS NULL OR (
            typeof(per_us) = 'integer' AND per_us BETWEEN 1000 AND 3162240000000000
        ))
    ),
    set_at INTEGER NOT NULL CHECK (
        typeof(set_at) = 'integer'
        AND set_at BETWEEN -62135510400000000 AND 253402214399999999
    ),
    set_by TEXT CHECK (set_by IS NULL OR (typeof(set_by) = 'text' AND length(set_by) <= 1000)),
    PRIMARY KEY (kind, name)
) WITHOUT ROWID;

CREATE TABLE futurecalls_cluster_tokens (
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    slot INTEGER NOT NULL CHECK (typeof(slot) = 'integer' AND slot BETWEEN 0 AND 99999),
    call_id INTEGER CHECK (call_id IS NULL OR typeof(call_id) = 'integer'),
    owner TEXT CHECK (
        owner IS NULL OR (typeof(owner) = 'text' AND length(owner) BETWEEN 1 AND 1000)
    ),
    used_until INTEGER CHECK (
        used_until IS NULL OR (
            typeof(used_until) = 'integer'
            AND used_until BETWEEN -62135510400000000 AND 253402214399999999
        )
    ),
    PRIMARY KEY (kind, name, slot)
) WITHOUT ROWID;
CREATE INDEX futurecalls_cluster_tokens_owner
    ON futurecalls_cluster_tokens (owner, call_id) WHERE owner IS NOT NULL;

CREATE TABLE futurecalls_paused (
    name TEXT PRIMARY KEY CHECK (typeof(name) = 'text' AND length(name) BETWEEN 1 AND 200),
    paused_at INTEGER NOT NULL CHECK (
        typeof(paused_at) = 'integer'
        AND paused_at BETWEEN -62135510400000000 AND 253402214399999999
    )
) WITHOUT ROWID;
