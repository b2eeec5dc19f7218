-- Cluster-wide coordination (trio_futurecalls._cluster): the workers on this schema,
-- the limits every one of them obeys, the tokens those limits hand out, and paused
-- classes.
--
-- workers: one row per running scheduler, kept alive by its heartbeat (expires_at). A
-- worker whose row expired (or is gone) is dead: its concurrency tokens are free
-- again, and it is no longer listed.
--
-- cluster_limits: kind 'concurrency' (at most `tokens` calls of `name` running at
-- once; name '*': of all classes together) or 'rate' (at most `tokens` starts of
-- `name` in any window of per_us microseconds). The last value set wins.
--
-- cluster_tokens: `tokens` rows per limit (slot 0 .. tokens - 1; rows of a higher slot
-- are left from a larger limit and never handed out). A claim takes one token of each
-- limit that applies to a call, in the claim's own statement, locking free token rows
-- FOR UPDATE SKIP LOCKED: two claims never take the same token. A concurrency token is
-- held for call_id by worker `owner` until the call ends (the worker frees it) or that
-- worker is dead (holder_expires_at: the worker's expiry, renewed by its heartbeat);
-- a rate token is used until used_until (its start + per_us): a token is reused only
-- a full window after its last start, so no window of per_us holds more starts than
-- there are tokens.
--
-- paused: classes no worker starts calls of (running ones finish).
-- Bounds as in 0003: times from 0001-01-02 to 9999-12-30 UTC; names as in calls.

CREATE TABLE {schema}.workers (
    id text PRIMARY KEY CONSTRAINT workers_id_length CHECK (char_length(id) BETWEEN 1 AND 1000),
    host text NOT NULL CONSTRAINT workers_host_length CHECK (char_length(host) <= 255),
    pid integer NOT NULL,
    started_at timestamptz NOT NULL CONSTRAINT workers_started_range
        CHECK (started_at BETWEEN '0001-01-02 00:00:00+00' AND '9999-12-30 23:59:59.999999+00'),
    heartbeat_at timestamptz NOT NULL CONSTRAINT workers_heartbeat_range
        CHECK (heartbeat_at BETWEEN '0001-01-02 00:00:00+00' AND '9999-12-30 23:59:59.999999+00'),
    expires_at timestamptz NOT NULL CONSTRAINT workers_expires_range
        CHECK (expires_at BETWEEN '0001-01-02 00:00:00+00' AND '9999-12-30 23:59:59.999999+00'),
    running integer NOT NULL DEFAULT 0 CONSTRAINT workers_running_range CHECK (running >= 0),
    -- JSON: the worker's limits and classes, for whoever looks.
    limits text NOT NULL DEFAULT '{}'
        CONSTRAINT workers_limits_size CHECK (octet_length(limits) <= 1048576)
);

CREATE TABLE {schema}.cluster_limits (
    kind text NOT NULL CONSTRAINT cluster_limits_kind CHECK (kind IN ('concurrency', 'rate')),
    name text NOT NULL
        CONSTRAINT cluster_limits_name_length CHECK (char_length(name) BETWEEN 1 AND 200),
    tokens integer NOT NULL CONSTRAINT cluster_limits_tokens CHECK (tokens BETWEEN 1 AND 100000),
    per_us bigint CONSTRAINT cluster_limits_per CHECK (
        (kind = 'rate') = (per_us IS NOT NULL)
        AND (per_us IS NULL OR per_us BETWEEN 1000 AND 3162240000000000)
    ),
    set_at timestamptz NOT NULL CONSTRAINT cluster_limits_set_range
        CHECK (set_at BETWEEN '0001-01-02 00:00:00+00' AND '9999-12-30 23:59:59.999999+00'),
    set_by text CONSTRAINT cluster_limits_set_by_length CHECK (char_length(set_by) <= 1000),
    PRIMARY KEY (kind, name)
);

CREATE TABLE {schema}.cluster_tokens (
    kind text NOT NULL,
    name text NOT NULL,
    slot integer NOT NULL CONSTRAINT cluster_tokens_slot CHECK (slot BETWEEN 0 AND 99999),
    call_id bigint,
    owner text CONSTRAINT cluster_tokens_owner_length CHECK (char_length(owner) BETWEEN 1 AND 1000),
    used_until timestamptz CONSTRAINT cluster_tokens_used_range
        CHECK (used_until BETWEEN '0001-01-02 00:00:00+00' AND '9999-12-30 23:59:59.999999+00'),
    -- The holder's worker expiry, renewed by its heartbeat (the claim reads this, not
    -- workers: a row lock re-reads the newest token row, while a subquery on workers
    -- would read the statement's snapshot and miss a worker registered since).
    holder_expires_at timestamptz CONSTRAINT cluster_tokens_holder_range
        CHECK (holder_expires_at BETWEEN '0001-01-02 00:00:00+00'
            AND '9999-12-30 23:59:59.999999+00'),
    PRIMARY KEY (kind, name, slot)
);
-- A worker's tokens, to free them when its calls end or it deregisters.
CREATE INDEX cluster_tokens_owner_idx ON {schema}.cluster_tokens (owner, call_id)
    WHERE owner IS NOT NULL;

CREATE TABLE {schema}.paused (
    name text PRIMARY KEY CONSTRAINT paused_name_length CHECK (char_length(name) BETWEEN 1 AND 200),
    paused_at timestamptz NOT NULL CONSTRAINT paused_at_range
        CHECK (paused_at BETWEEN '0001-01-02 00:00:00+00' AND '9999-12-30 23:59:59.999999+00')
);
