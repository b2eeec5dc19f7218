-- Named queries of the PostgreSQL store. {schema} is replaced by the validated, quoted
-- schema name when the store opens; every value is a $n parameter.

-- name: create_schema
CREATE SCHEMA IF NOT EXISTS {schema};

-- name: create_version_table
CREATE TABLE IF NOT EXISTS {schema}.schema_version (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- name: migration_lock
-- Held until the migrating transaction ends: one migrator per schema, across processes.
SELECT pg_advisory_xact_lock($1::bigint);

-- name: schema_version
SELECT coalesce(max(version), 0) FROM {schema}.schema_version;

-- name: version_table_exists
SELECT to_regclass($1::text) IS NOT NULL;

-- name: record_version
INSERT INTO {schema}.schema_version (version, name) VALUES ($1, $2);

-- name: server_checks
-- What the store needs of the server before it creates anything: its encoding (UTF8)
-- and its version (PostgreSQL 12 or later: MATERIALIZED CTEs, plan_cache_mode).
SELECT current_setting('server_encoding'), current_setting('server_version_num')::integer,
    current_setting('server_version');

-- name: server_connections
-- How many connections the server takes and how many others use: max_connections,
-- the slots reserved for superusers (and, from PostgreSQL 16, for roles with
-- pg_use_reserved_connections), and the client connections open right now.
SELECT current_setting('max_connections')::integer,
    current_setting('superuser_reserved_connections')::integer,
    coalesce(current_setting('reserved_connections', true)::integer, 0),
    (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::integer;

-- name: notify
SELECT pg_notify($1::text, $2::text);

-- name: _async_commit
-- open_postgres_store(schedule_commit="asynchronous"): a CTE the statement's result
-- joins (so it is evaluated), which sets synchronous_commit to off for the statement's
-- own transaction only (is_local: the connection is back to its setting once it
-- ends). The commit then returns without waiting for its WAL to reach the disk
-- (PostgreSQL's "asynchronous commit"): a server crash can lose the last few hundred
-- milliseconds of such schedules, never anything else. Only the statements that store
-- scheduled calls (the *_async_commit variants below) include it.
async_commit AS (
    SELECT set_config('synchronous_commit', 'off', true) AS setting
)

-- name: _insert_one_call
inserted AS (
    INSERT INTO {schema}.calls (name, payload, due_at, identifier, scheduled_at, priority)
    VALUES ($1::text, $2::text, $3::timestamptz, $4::text, $5::timestamptz, $8::integer)
    RETURNING id
), wakeup AS (
    SELECT count(*) AS sent FROM (SELECT pg_notify($6::text, $7::text)) AS n
)

-- name: insert_one_call
-- insert_new_calls for a batch of one (schedule, schedule_call one at a time): plain
-- values, no arrays to encode or unnest.
WITH {_insert_one_call}
SELECT inserted.id FROM inserted CROSS JOIN wakeup;

-- name: insert_one_call_async_commit
-- insert_one_call, committed asynchronously (_async_commit).
WITH {_insert_one_call}, {_async_commit}
SELECT inserted.id FROM inserted CROSS JOIN wakeup CROSS JOIN async_commit;

-- name: _insert_new_calls
input AS (
    SELECT *
    FROM unnest(
        $1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::timestamptz[], $8::integer[]
    ) WITH ORDINALITY AS t (name, payload, due_at, identifier, scheduled_at, priority, ord)
), inserted AS (
    INSERT INTO {schema}.calls (name, payload, due_at, identifier, scheduled_at, priority)
    SELECT name, payload, due_at, identifier, scheduled_at, priority
    FROM input ORDER BY ord
    RETURNING id
), wakeup AS (
    SELECT count(*) AS sent FROM (SELECT pg_notify($6::text, $7::text)) AS n
)

-- name: insert_new_calls
-- insert_calls for the common batch: new calls (no attempts yet, not a recurring run),
-- so three arrays fewer to encode and unnest (schedule, schedule_call, schedule_many).
WITH {_insert_new_calls}
SELECT inserted.id FROM inserted CROSS JOIN wakeup ORDER BY inserted.id;

-- name: insert_new_calls_async_commit
-- insert_new_calls, committed asynchronously (_async_commit).
WITH {_insert_new_calls}, {_async_commit}
SELECT inserted.id FROM inserted CROSS JOIN wakeup CROSS JOIN async_commit
ORDER BY inserted.id;

-- name: _insert_calls
input AS (
    SELECT *
    FROM unnest(
        $1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::timestamptz[], $8::integer[],
        $9::text[], $10::timestamptz[], $11::integer[]
    ) WITH ORDINALITY AS t (
        name, payload, due_at, identifier, scheduled_at, attempts, recurring_key, tick_at,
        priority, ord
    )
), inserted AS (
    INSERT INTO {schema}.calls
        (name, payload, due_at, identifier, scheduled_at, attempts, recurring_key, tick_at,
        priority)
    SELECT name, payload, due_at, identifier, scheduled_at, attempts, recurring_key, tick_at,
        priority
    FROM input ORDER BY ord
    RETURNING id
), wakeup AS (
    SELECT count(*) AS sent FROM (SELECT pg_notify($6::text, $7::text)) AS n
)

-- name: insert_calls
-- Many calls in one statement. Rows are inserted in input order (WITH ORDINALITY +
-- ORDER BY), so identity values grow in input order and "ORDER BY id" returns the ids
-- in the order the calls were given. The NOTIFY is sent in the same statement (it is
-- delivered when the statement's transaction commits).
WITH {_insert_calls}
SELECT inserted.id FROM inserted CROSS JOIN wakeup ORDER BY inserted.id;

-- name: insert_calls_async_commit
-- insert_calls, committed asynchronously (_async_commit).
WITH {_insert_calls}, {_async_commit}
SELECT inserted.id FROM inserted CROSS JOIN wakeup CROSS JOIN async_commit
ORDER BY inserted.id;

-- name: _insert_keyed_calls
input AS (
    SELECT *
    FROM unnest(
        $1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::timestamptz[],
        $8::integer[], $9::text[], $10::text[], $11::text[], $12::timestamptz[], $13::integer[]
    ) WITH ORDINALITY AS t (
        name, payload, due_at, identifier, scheduled_at, attempts, unique_key, on_conflict,
        recurring_key, tick_at, priority, ord
    )
), numbered AS MATERIALIZED (
    SELECT nextval(pg_get_serial_sequence('{schema}.calls', 'id')) AS new_id, i.*
    FROM (SELECT * FROM input ORDER BY ord) AS i
), holders AS (
    SELECT c.id, c.name, c.unique_key
    FROM {schema}.calls AS c
    JOIN numbered AS n ON c.name = n.name AND c.unique_key = n.unique_key
), inserted AS (
    INSERT INTO {schema}.calls (
        id, name, payload, due_at, identifier, scheduled_at, attempts, unique_key,
        recurring_key, tick_at, priority
    )
    OVERRIDING SYSTEM VALUE
    SELECT new_id, name, payload, due_at, identifier, scheduled_at, attempts, unique_key,
        recurring_key, tick_at, priority
    FROM numbered
    WHERE unique_key IS NULL OR on_conflict <> 'replace'
    ORDER BY name, unique_key, ord
    ON CONFLICT (name, unique_key) WHERE unique_key IS NOT NULL DO NOTHING
    RETURNING id
), replaced AS (
    INSERT INTO {schema}.calls
        (id, name, payload, due_at, identifier, scheduled_at, attempts, unique_key, priority)
    OVERRIDING SYSTEM VALUE
    SELECT new_id, name, payload, due_at, identifier, scheduled_at, attempts, unique_key,
        priority
    FROM numbered
    WHERE unique_key IS NOT NULL AND on_conflict = 'replace'
    ORDER BY name, unique_key, ord
    ON CONFLICT (name, unique_key) WHERE unique_key IS NOT NULL DO UPDATE
    SET payload = excluded.payload, due_at = excluded.due_at, identifier = excluded.identifier,
        priority = excluded.priority
    RETURNING id, name, unique_key
), wakeup AS (
    SELECT count(*) AS sent FROM (SELECT pg_notify($6::text, $7::text)) AS n
)

-- name: insert_keyed_calls
-- A batch with unique keys ($9, NULL for none; each (name, key) at most once: the
-- store merges repeats within a batch first) and what to do on a conflict ($10:
-- ignore, replace, error), in one statement. The partial unique index of migration
-- 0004 finds each conflict with a pending call, also with one another transaction is
-- inserting right now (ON CONFLICT waits for it to end).
--
-- "ignore" and "error" rows are inserted with DO NOTHING (no lock on the holder, so
-- a hot key costs no waiting); the holder's id comes from this statement's snapshot.
-- A holder committed after the snapshot was taken is not in it: that row's id is
-- NULL, and the store runs the statement again for it (then it sees the holder, or,
-- if a claim freed the key meanwhile, inserts). "replace" rows use DO UPDATE, which
-- locks the holder and gives it the new payload, due time, identifier and priority; PostgreSQL
-- guarantees an insert or an update for each (if a claim frees the key meanwhile, the
-- insert goes ahead). Ids are drawn first, in input order, so that "id = new_id"
-- tells an inserted row from a holder. Rows are written in (name, unique_key) order,
-- so that batches racing for the same keys lock them in the same order. NOTIFY in
-- the same statement. Returns, in input order: the id (NULL: run again), whether it
-- is a holder's ("conflicted"), and the input's on_conflict.
WITH {_insert_keyed_calls}
{_insert_keyed_answer}
ORDER BY n.ord;

-- name: insert_keyed_calls_async_commit
-- insert_keyed_calls, committed asynchronously (_async_commit).
WITH {_insert_keyed_calls}, {_async_commit}
{_insert_keyed_answer}
CROSS JOIN async_commit
ORDER BY n.ord;

-- name: _insert_keyed_answer
-- The answer of insert_keyed_calls and its _async_commit variant, one row per input
-- (each statement adds its own joins, then ORDER BY n.ord).
SELECT coalesce(i.id, r.id, h.id) AS id,
    coalesce(i.id, r.id) IS DISTINCT FROM n.new_id AS conflicted,
    n.on_conflict
FROM numbered AS n
LEFT JOIN inserted AS i ON i.id = n.new_id
LEFT JOIN replaced AS r ON r.name = n.name AND r.unique_key = n.unique_key
LEFT JOIN holders AS h ON h.name = n.name AND h.unique_key = n.unique_key
CROSS JOIN wakeup

-- name: pending
-- A row whose lease expired has no unique key (its claim cleared it). A waiting row
-- lists the prerequisites it still waits for.
SELECT id, name, payload, due_at, identifier, scheduled_at, attempts, recurring_key, tick_at,
    priority, unique_key,
    CASE WHEN waiting > 0 THEN ARRAY(
        SELECT d.prerequisite_id FROM {schema}.call_dependencies AS d
        WHERE d.call_id = calls.id ORDER BY d.prerequisite_id
    ) END AS waiting_for
FROM {schema}.calls
WHERE (lease_owner IS NULL OR due_at <= $6::timestamptz)
  AND ($1::text IS NULL OR name = $1::text)
  AND ($2::text IS NULL OR identifier = $2::text)
  AND ($3::timestamptz IS NULL OR due_at >= $3::timestamptz)
  AND ($4::timestamptz IS NULL OR due_at < $4::timestamptz)
ORDER BY due_at, id
LIMIT $5::bigint;

-- name: pending_counts
-- Per name: pending calls, those due by $1 (inclusive) and those waiting for
-- prerequisites (never due), in one pass. A row whose lease expired by then is pending
-- again (and due).
SELECT name, count(*), count(*) FILTER (WHERE due_at <= $1::timestamptz AND waiting = 0),
    count(*) FILTER (WHERE waiting > 0)
FROM {schema}.calls
WHERE lease_owner IS NULL OR due_at <= $1::timestamptz
GROUP BY name;

-- name: _claim_wanted
-- A fragment opening every claim statement: the names asked for ($1) with their free
-- slots here ($2). Paused names (table paused of migration 0008) are left out: their
-- rows are neither taken nor counted in the next due time, and no token is locked for
-- them. One probe of paused's primary key per name; a pause committed after this
-- statement's snapshot is not seen by it.
WITH wanted AS (
    SELECT * FROM unnest($1::text[], $2::integer[]) AS w (name, slots)
    WHERE NOT EXISTS (SELECT FROM {schema}.paused AS p WHERE p.name = w.name)
)

-- name: _claim_quotas
-- A fragment (names starting with "_" are not queries) opening every claim statement:
-- what each name may take, within its free slots here ($1 names, $2 slots) and the
-- cluster-wide limits of migration 0008 ($3 now, $4 the total, $5 the worker).
--
-- A name under a concurrency limit needs a free token of it for each call: one no
-- call holds, or whose holder's worker is dead (the token's holder_expires_at, the
-- worker's expiry its heartbeat renews, has passed). That is read on the token row
-- itself, never in workers: a row lock re-reads the newest version of the token row,
-- while a subquery on workers would read this statement's snapshot, and take for
-- dead a worker registered since (and its token). Only a live worker ($5) takes a
-- token, so that a dead worker's tokens are known free. A name under
-- a rate limit needs a token not used in the last window (used_until <= $3). Free
-- tokens are locked FOR UPDATE SKIP LOCKED, at most the name's slots of each limit:
-- two claims never take the same token, and one locked here is another claim's to
-- skip until this statement's transaction ends. A name's quota is the least of its
-- slots and its free tokens of each limit on it. Tokens of the limit on all classes
-- (name '*') are taken after the picks (_claim_chosen), as many as were picked.
-- With no limit stored, each lookup finds nothing and the quotas are the slots.
--
-- Paused names are left out (_claim_wanted).
{_claim_wanted}, worker AS (
    SELECT EXISTS (
        SELECT 1 FROM {schema}.workers AS w WHERE w.id = $5::text AND w.expires_at > $3
    ) AS alive
), limits AS (
    SELECT l.kind, l.name, l.tokens, l.per_us, w.slots AS wanted
    FROM wanted AS w
    JOIN {schema}.cluster_limits AS l ON l.name = w.name
), busy AS (
    -- Tokens in use, in every slot: one beyond a lowered limit counts until freed.
    SELECT l.kind, l.name, count(t.slot) AS n
    FROM limits AS l
    JOIN {schema}.cluster_tokens AS t ON t.kind = l.kind AND t.name = l.name
    WHERE CASE WHEN l.kind = 'rate' THEN t.used_until > $3
        ELSE t.call_id IS NOT NULL AND t.holder_expires_at > $3 END
    GROUP BY l.kind, l.name
), free AS (
    SELECT l.kind, l.name, t.slot,
        row_number() OVER (PARTITION BY l.kind, l.name ORDER BY t.slot) AS n
    FROM limits AS l
    CROSS JOIN LATERAL (
        SELECT t.slot FROM {schema}.cluster_tokens AS t
        WHERE t.kind = l.kind AND t.name = l.name AND t.slot < l.tokens
          AND CASE WHEN l.kind = 'rate' THEN t.used_until IS NULL OR t.used_until <= $3
              ELSE t.call_id IS NULL OR t.holder_expires_at IS NULL
                  OR t.holder_expires_at <= $3 END
        ORDER BY t.slot
        LIMIT greatest(0, least(l.wanted, l.tokens - coalesce(
            (SELECT b.n FROM busy AS b WHERE b.kind = l.kind AND b.name = l.name), 0)))
        FOR UPDATE SKIP LOCKED
    ) AS t
    WHERE l.kind = 'rate' OR (SELECT alive FROM worker)
), quotas AS (
    SELECT w.name, least(
        w.slots,
        (SELECT min(coalesce(f.n, 0))
         FROM limits AS l
         LEFT JOIN LATERAL (
             SELECT max(f.n) AS n FROM free AS f WHERE f.kind = l.kind AND f.name = l.name
         ) AS f ON true
         WHERE l.name = w.name)
    )::integer AS slots
    FROM wanted AS w
), everyone AS (
    -- The limit on all classes together, if any, and its tokens in use (as in busy).
    SELECT l.tokens, (
        SELECT count(*) FROM {schema}.cluster_tokens AS t
        WHERE t.kind = 'concurrency' AND t.name = '*' AND t.call_id IS NOT NULL
          AND t.holder_expires_at > $3
    ) AS busy
    FROM {schema}.cluster_limits AS l
    WHERE l.kind = 'concurrency' AND l.name = '*'
)

-- name: _claim_levels
-- A fragment of _claim_picked and _claim_soonest: the priorities in use by the rows of
-- name q.name that wait for no prerequisite, from the highest down, one backward seek
-- of the claim's partial index each (a recursive CTE is evaluated only as far as it
-- is read).
WITH RECURSIVE levels (priority) AS (
    SELECT max(top.priority) FROM {schema}.calls AS top
    WHERE top.name = q.name AND top.waiting = 0
    UNION ALL
    SELECT (
        SELECT max(lower.priority) FROM {schema}.calls AS lower
        WHERE lower.name = q.name AND lower.waiting = 0
          AND lower.priority < levels.priority
    )
    FROM levels
    WHERE levels.priority IS NOT NULL
)

-- name: _claim_picked
-- A fragment following _claim_quotas, shared by the three claim statements so that
-- they always pick alike: lock the best due rows of each name (at most its quota:
-- highest priority first, then earliest due, then lowest id), skipping rows another
-- claimer holds, keep the best $4 across names due by $3.
--
-- Rows waiting for prerequisites are not claimed: every part reads the partial index
-- (name, priority, due_at, id) WHERE waiting = 0 of migration 0007, never them.
--
-- Per name, a loose index scan of (name, priority, due_at, id): "levels" walks the
-- name's distinct priorities from the highest down, one backward index seek each,
-- and only as far as the LIMIT pulls (a recursive CTE is evaluated on demand); for
-- each priority, an index range scan of its rows due by $3, earliest first, at most
-- the name's quota: future rows of a priority are never read. The rows found are
-- sorted (priority, due_at, id) before the name's LIMIT, so the order does not rest
-- on the plan; rows read but not kept stay locked only until the statement's
-- transaction ends.
picked AS (
    SELECT c.id, c.due_at, c.priority, q.name
    FROM quotas AS q
    CROSS JOIN LATERAL (
        {_claim_levels}
        SELECT due.id, due.due_at, levels.priority
        FROM levels
        CROSS JOIN LATERAL (
            SELECT calls.id, calls.due_at FROM {schema}.calls AS calls
            WHERE calls.name = q.name AND calls.priority = levels.priority
              AND calls.waiting = 0 AND calls.due_at <= $3::timestamptz
            ORDER BY calls.due_at, calls.id
            LIMIT q.slots
            FOR UPDATE SKIP LOCKED
        ) AS due
        WHERE levels.priority IS NOT NULL
        -- (Stated, not assumed from the plan: at most q.slots rows per level were
        -- read and locked, so this sort is small.)
        ORDER BY levels.priority DESC, due.due_at, due.id
        LIMIT q.slots
    ) AS c
    WHERE q.slots > 0
    ORDER BY c.priority DESC, c.due_at, c.id
    LIMIT $4::integer
)

-- name: _claim_chosen
-- A fragment following _claim_picked: the picks that get a token of the limit on all
-- classes (if there is one; locked as in _claim_quotas, at most one per pick, taken by
-- the best picks), numbered within their name and overall, and the tokens they take
-- (taken in "took", in the same statement). Picks left out stay locked only until the
-- statement's transaction ends.
everyone_free AS (
    SELECT t.slot, row_number() OVER (ORDER BY t.slot) AS n
    FROM everyone AS e
    CROSS JOIN LATERAL (
        SELECT t.slot FROM {schema}.cluster_tokens AS t
        WHERE t.kind = 'concurrency' AND t.name = '*' AND t.slot < e.tokens
          AND (t.call_id IS NULL OR t.holder_expires_at IS NULL OR t.holder_expires_at <= $3)
        ORDER BY t.slot
        LIMIT greatest(0, least((SELECT count(*) FROM picked), e.tokens - e.busy))
        FOR UPDATE SKIP LOCKED
    ) AS t
    WHERE (SELECT alive FROM worker)
), numbered AS (
    SELECT p.id, p.due_at, p.priority, p.name,
        row_number() OVER (PARTITION BY p.name ORDER BY p.priority DESC, p.due_at, p.id) AS n_name,
        row_number() OVER (ORDER BY p.priority DESC, p.due_at, p.id) AS n_all
    FROM picked AS p
), chosen AS (
    SELECT n.id, n.due_at, n.priority, n.name, n.n_name, n.n_all FROM numbered AS n
    WHERE NOT EXISTS (SELECT 1 FROM everyone)
       OR n.n_all <= (SELECT count(*) FROM everyone_free)
), took AS (
    UPDATE {schema}.cluster_tokens AS t
    SET call_id = CASE WHEN a.kind = 'concurrency' THEN a.id END,
        owner = CASE WHEN a.kind = 'concurrency' THEN $5::text END,
        holder_expires_at = CASE WHEN a.kind = 'concurrency' THEN (
            SELECT w.expires_at FROM {schema}.workers AS w WHERE w.id = $5::text
        ) END,
        used_until = CASE WHEN a.kind = 'rate'
            THEN $3::timestamptz + a.per_us * interval '1 microsecond' END
    FROM (
        SELECT c.id, f.kind, f.name, f.slot, l.per_us
        FROM chosen AS c
        JOIN free AS f ON f.name = c.name AND f.n = c.n_name
        JOIN limits AS l ON l.kind = f.kind AND l.name = f.name
        UNION ALL
        SELECT c.id, 'concurrency', '*', e.slot, NULL
        FROM chosen AS c
        JOIN everyone_free AS e ON e.n = c.n_all
    ) AS a
    WHERE t.kind = a.kind AND t.name = a.name AND t.slot = a.slot
    RETURNING a.id, a.kind
)

-- name: _claim_next
-- A fragment following _claim_chosen: when the claim should look again.
--
-- Once the chosen rows are taken, the earliest due row of each name that still has
-- room (its quota not used up, and neither the total $4 nor the tokens of the limit
-- on all classes used up), leaving out the chosen rows themselves and rows waiting
-- for prerequisites. On the claim's partial index: per such name, one seek per
-- priority in use (usually one), as in _claim_picked.
--
-- And when a limit may free a token without a word from its holder: a rate limit's
-- earliest used_until; a concurrency limit's holders' worker expiry (a worker that
-- dies frees its tokens then; a live one's heartbeat moves it on, and its calls'
-- ends notify). A free token this claim could not lock (another claim holds it for
-- a moment) makes the claim due again now.
room AS (
    SELECT q.name FROM quotas AS q
    WHERE q.slots > (SELECT count(*) FROM chosen AS c WHERE c.name = q.name)
      AND (SELECT count(*) FROM chosen) < $4::integer
      AND (NOT EXISTS (SELECT 1 FROM everyone)
           OR (SELECT count(*) FROM chosen) < (SELECT count(*) FROM everyone_free)
           OR (SELECT count(*) FROM picked) = 0)
), limited AS (
    -- The limits that held a name back (fewer free tokens than its slots), and the
    -- limit on all classes when it held the picks back.
    -- "room": how many free tokens the claim looked for (fewer than its slots when
    -- tokens held beyond a lowered limit count); a free token it did not lock when it
    -- found fewer than that was locked by another claim.
    SELECT l.kind, l.name, l.tokens, w.slots AS wanted, l.per_us,
        least(w.slots, l.tokens - coalesce(b.n, 0)) AS room
    FROM wanted AS w
    JOIN {schema}.cluster_limits AS l ON l.name = w.name
    LEFT JOIN busy AS b ON b.kind = l.kind AND b.name = l.name
    WHERE w.slots > (SELECT count(*) FROM free AS f WHERE f.kind = l.kind AND f.name = l.name)
    UNION ALL
    SELECT 'concurrency', '*', e.tokens, $4::integer, NULL::bigint,
        least((SELECT count(*) FROM picked), e.tokens - e.busy)
    FROM everyone AS e
    WHERE (SELECT count(*) FROM everyone_free) < (SELECT count(*) FROM numbered)
), upcoming AS (
    SELECT least(
        {_claim_soonest},
        (SELECT min(t.used_until) FROM limited AS l
         JOIN {schema}.cluster_tokens AS t
           ON t.kind = l.kind AND t.name = l.name AND t.slot < l.tokens
         WHERE l.kind = 'rate' AND t.used_until > $3),
        -- The rate tokens this claim takes free again a window from now.
        (SELECT min($3::timestamptz + l.per_us * interval '1 microsecond') FROM limited AS l
         WHERE l.kind = 'rate' AND EXISTS (
             SELECT 1 FROM free AS f WHERE f.kind = l.kind AND f.name = l.name)),
        (SELECT min(t.holder_expires_at) FROM limited AS l
         JOIN {schema}.cluster_tokens AS t ON t.kind = l.kind AND t.name = l.name
         WHERE l.kind = 'concurrency' AND t.call_id IS NOT NULL
           AND t.holder_expires_at > $3),
        (SELECT $3::timestamptz FROM limited AS l
         WHERE l.kind = 'rate'
           AND (SELECT count(*) FROM free AS f WHERE f.kind = l.kind AND f.name = l.name)
               < l.room
           AND EXISTS (
             SELECT 1 FROM {schema}.cluster_tokens AS t
             WHERE t.kind = l.kind AND t.name = l.name AND t.slot < l.tokens
               AND (t.used_until IS NULL OR t.used_until <= $3)
               AND NOT EXISTS (
                   SELECT 1 FROM free AS f WHERE f.kind = t.kind AND f.name = t.name
                     AND f.slot = t.slot)
         )
         LIMIT 1),
        (SELECT $3::timestamptz FROM limited AS l
         WHERE l.kind = 'concurrency' AND (SELECT alive FROM worker)
           AND (CASE WHEN l.name = '*' THEN (SELECT count(*) FROM everyone_free)
                ELSE (SELECT count(*) FROM free AS f
                      WHERE f.kind = l.kind AND f.name = l.name) END) < l.room
           AND EXISTS (
             SELECT 1 FROM {schema}.cluster_tokens AS t
             WHERE t.kind = l.kind AND t.name = l.name AND t.slot < l.tokens
               AND (t.call_id IS NULL OR t.holder_expires_at IS NULL
                   OR t.holder_expires_at <= $3)
               AND NOT EXISTS (
                   SELECT 1 FROM free AS f WHERE f.kind = t.kind AND f.name = t.name
                     AND f.slot = t.slot)
               AND NOT EXISTS (
                   SELECT 1 FROM everyone_free AS e WHERE t.name = '*' AND e.slot = t.slot)
         )
         LIMIT 1)
    ) AS next_due
)

-- name: _claim_soonest
-- A fragment of the next due time (_claim_next, _claim_plain): the earliest due row of
-- the names in "room" (as q), leaving out the chosen rows and rows waiting for
-- prerequisites; per name, one seek per priority in use (usually one), as in
-- _claim_picked.
(SELECT min(first.due_at)
 FROM room AS q
 CROSS JOIN LATERAL (
    {_claim_levels}
    SELECT soonest.due_at
    FROM levels
    CROSS JOIN LATERAL (
        SELECT c.due_at FROM {schema}.calls AS c
        WHERE c.name = q.name AND c.priority = levels.priority AND c.waiting = 0
          AND NOT EXISTS (SELECT 1 FROM chosen AS p WHERE p.id = c.id)
        ORDER BY c.due_at, c.id
        LIMIT 1
    ) AS soonest
 ) AS first)

-- name: _claim_result
-- A fragment ending each claim statement: the taken calls (with whether each holds a
-- concurrency token: its end must free it), then one row whose id is NULL and whose
-- last column is the next due time (see _claim_next).
SELECT id, name, payload, due_at, identifier, scheduled_at, attempts, recurring_key, tick_at,
    priority, dependents,
    EXISTS (SELECT 1 FROM took WHERE took.id = taken.id AND took.kind = 'concurrency'),
    NULL::timestamptz AS next_due
FROM taken
UNION ALL
SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, next_due
FROM upcoming

-- name: claim
-- Every claim statement deletes rows (or leases them) and commits before asyncpg reads
-- its reply: nothing it returns may fail to convert to Python, or those calls would
-- be gone without reaching the dispatcher. The CHECKs of migration 0003 keep every
-- stored time within what Python holds, and the attempt count goes up only to their
-- bound (1000000), so it can neither overflow nor make the claim fail forever.
--
-- One statement: lock the best due rows of each name (at most its quota; see
-- _claim_quotas and _claim_picked), skipping rows another claimer holds, keep the
-- best `limit` across names (and as many as the limit on all classes allows: see
-- _claim_chosen), take their tokens, then
-- delete them (at-most-once) or, for names in $7, lease them to $5 until $6
-- (at-least-once; an expired lease's row is due again, since its due_at is the
-- expiry). Either way the claim frees the row's unique key (a leased row's is set to
-- NULL). Returns each call with its due time before the claim and its new attempt
-- count. Rows locked but not kept are unlocked when the statement's transaction ends.
--
-- The chosen rows are found again by "id = ANY(ARRAY(SELECT id FROM chosen))": one
-- primary-key probe per id, whatever the plan. Claims run with generic plans (see
-- stores/postgres/_pool.py), which cannot know the quotas and estimate hundreds of
-- chosen rows; joined to "chosen", a table of some thousands of rows was read whole
-- (a sequential scan and a hash join) on every claim.
{_claim_quotas}, {_claim_picked}, {_claim_chosen}, {_claim_next}, deleted AS (
    DELETE FROM {schema}.calls
    WHERE id = ANY(ARRAY(SELECT id FROM chosen)) AND NOT (name = ANY($7::text[]))
    RETURNING id, name, payload, due_at, identifier, scheduled_at,
        least(attempts + 1, 1000000) AS attempts, recurring_key, tick_at, priority, dependents
), started AS (
    -- Deleted rows that other calls wait for are recorded as started prerequisites
    -- (under the lease's owner, until its expiry), so that calls can still be made
    -- to wait for them while they run (their end is told with prerequisite_ended).
    INSERT INTO {schema}.started_prerequisites (call_id, name, owner, expires_at)
    SELECT id, name, $5::text, $6::timestamptz FROM deleted WHERE dependents
    ON CONFLICT (call_id) DO NOTHING
), leased AS (
    UPDATE {schema}.calls AS c
    SET lease_owner = $5::text, due_at = $6::timestamptz,
        attempts = least(c.attempts + 1, 1000000), unique_key = NULL
    FROM chosen AS p
    WHERE c.id = ANY(ARRAY(SELECT id FROM chosen)) AND c.id = p.id AND c.name = ANY($7::text[])
    RETURNING c.id, c.name, c.payload, p.due_at, c.identifier, c.scheduled_at, c.attempts,
        c.recurring_key, c.tick_at, c.priority, c.dependents
), taken AS (
    SELECT * FROM deleted
    UNION ALL
    SELECT * FROM leased
)
{_claim_result};

-- name: _claim_delete_taken
-- A fragment of claim_delete and claim_delete_plain: the chosen rows, deleted.
taken AS (
    DELETE FROM {schema}.calls
    WHERE id = ANY(ARRAY(SELECT id FROM chosen))
    RETURNING id, name, payload, due_at, identifier, scheduled_at,
        least(attempts + 1, 1000000) AS attempts, recurring_key, tick_at, priority, dependents
), started AS (
    -- As in "claim": deleted rows that other calls wait for are recorded as started,
    -- under owner $5 until $6 (NULL: claimed without a lease, no expiry).
    INSERT INTO {schema}.started_prerequisites (call_id, name, owner, expires_at)
    SELECT id, name, $5::text, $6::timestamptz FROM taken WHERE dependents
    ON CONFLICT (call_id) DO NOTHING
)

-- name: claim_delete
-- The claim when no name is leased (at-most-once only): the same picks as "claim",
-- deleted, without the lease branch (a cheaper statement to plan and run).
{_claim_quotas}, {_claim_picked}, {_claim_chosen}, {_claim_next}, {_claim_delete_taken}
{_claim_result};

-- name: _claim_lease_taken
-- A fragment of claim_lease and claim_lease_plain: the chosen rows, leased.
taken AS (
    UPDATE {schema}.calls AS c
    SET lease_owner = $5::text, due_at = $6::timestamptz,
        attempts = least(c.attempts + 1, 1000000), unique_key = NULL
    FROM chosen AS p
    WHERE c.id = ANY(ARRAY(SELECT id FROM chosen)) AND c.id = p.id
    RETURNING c.id, c.name, c.payload, p.due_at, c.identifier, c.scheduled_at, c.attempts,
        c.recurring_key, c.tick_at, c.priority, c.dependents
)

-- name: claim_lease
-- The claim when every name is leased (at-least-once only): the same picks as
-- "claim", leased to $5 until $6, without the delete branch.
{_claim_quotas}, {_claim_picked}, {_claim_chosen}, {_claim_next}, {_claim_lease_taken}
{_claim_result};

-- name: _claim_plain
-- A fragment opening the plain claims (claim_delete_plain, claim_lease_plain): the
-- claim of _claim_quotas to _claim_next for names under no cluster-wide limit, without
-- the parts that look for limits and take their tokens (planned or not, they cost
-- the server a third of a small claim's time).
--
-- If a cluster-wide limit is stored for a name asked for, or for all classes
-- ("limits_stored", in this statement's snapshot, as the full claim would see it),
-- it takes nothing (no quota) and says so in its last row (_claim_plain_result); the
-- store then claims with the full statement. Otherwise it picks, takes and answers
-- exactly what the full one would: with no limit, the full claim's quotas are the
-- slots, it chooses every pick, takes no token, and its next due time is
-- _claim_soonest's.
{_claim_wanted}, limits_stored AS (
    SELECT EXISTS (
        SELECT 1 FROM {schema}.cluster_limits AS l
        WHERE l.name = '*' OR l.name = ANY($1::text[])
    ) AS present
), quotas AS (
    SELECT w.name, w.slots FROM wanted AS w WHERE NOT (SELECT present FROM limits_stored)
), {_claim_picked}, chosen AS (
    SELECT p.id, p.due_at, p.priority, p.name FROM picked AS p
), room AS (
    SELECT q.name FROM quotas AS q
    WHERE q.slots > (SELECT count(*) FROM chosen AS c WHERE c.name = q.name)
      AND (SELECT count(*) FROM chosen) < $4::integer
), upcoming AS (
    SELECT {_claim_soonest} AS next_due
)

-- name: _claim_plain_result
-- A fragment ending the plain claims: as _claim_result (no call holds a token), and
-- in the last row, whether a cluster-wide limit kept the claim from taking anything.
SELECT id, name, payload, due_at, identifier, scheduled_at, attempts, recurring_key, tick_at,
    priority, dependents, false, NULL::timestamptz AS next_due
FROM taken
UNION ALL
SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
    (SELECT present FROM limits_stored), next_due
FROM upcoming

-- name: claim_delete_plain
-- claim_delete for names under no cluster-wide limit (see _claim_plain).
{_claim_plain}, {_claim_delete_taken}
{_claim_plain_result};

-- name: claim_lease_plain
-- claim_lease for names under no cluster-wide limit (see _claim_plain).
{_claim_plain}, {_claim_lease_taken}
{_claim_plain_result};

-- name: put_back_many
-- Calls made pending again exactly as given (due time, attempts), under their ids, in
-- one statement for many requests at once (see stores/postgres/_grouped.py): a row
-- leased by the row's owner ($8, NULL for none) has its lease ended; a row that is gone
-- (deleted by its claim) is inserted again with its old id. A row that exists
-- otherwise (pending already, or another worker's) is left alone. The same call given
-- twice is put back once, by its first mention. NOTIFY $9 with $10 in the same
-- statement if anything was put back. Returns the positions (1-based) of the input
-- rows put back, then (position NULL) the ids of the runs dropped whose dependents
-- must end. $14: whether other calls wait for the call (as claimed).
WITH input AS (
    SELECT *
    FROM unnest(
        $1::bigint[], $2::text[], $3::text[], $4::timestamptz[], $5::text[],
        $6::timestamptz[], $7::integer[], $8::text[], $11::text[], $12::timestamptz[],
        $13::integer[], $14::boolean[]
    ) WITH ORDINALITY AS t (
        id, name, payload, due_at, identifier, scheduled_at, attempts, owner, recurring_key,
        tick_at, priority, dependents, ord
    )
), released AS (
    UPDATE {schema}.calls AS c
    SET lease_owner = NULL, due_at = i.due_at, attempts = i.attempts
    FROM (
        SELECT DISTINCT ON (id, owner) * FROM input WHERE owner IS NOT NULL ORDER BY id, owner, ord
    ) AS i
    WHERE c.id = i.id AND c.lease_owner = i.owner
    RETURNING i.ord
), gone AS (
    -- (A run of a recurring schedule cancelled meanwhile is not stored again: its
    -- runs that had not started went with it.)
    SELECT DISTINCT ON (id) * FROM input AS i
    WHERE NOT EXISTS (SELECT 1 FROM {schema}.calls AS c WHERE c.id = i.id)
      AND (i.recurring_key IS NULL
           OR EXISTS (SELECT 1 FROM {schema}.recurring AS r WHERE r.key = i.recurring_key))
    ORDER BY id, ord
), reinserted AS (
    INSERT INTO {schema}.calls
        (id, name, payload, due_at, identifier, scheduled_at, attempts, recurring_key, tick_at,
        priority, dependents)
    OVERRIDING SYSTEM VALUE
    SELECT id, name, payload, due_at, identifier, scheduled_at, attempts, recurring_key, tick_at,
        priority, dependents
    FROM gone
    ON CONFLICT (id) DO NOTHING
    RETURNING id
), unstarted AS (
    -- Pending again, not running: its record as a started prerequisite ends. (A call
    -- had dependents only if its claim saw them: calls can be made to wait for a
    -- started at-most-once call only while that record exists.)
    DELETE FROM {schema}.started_prerequisites WHERE call_id IN (SELECT id FROM reinserted)
), done AS (
    SELECT ord FROM released
    UNION ALL
    SELECT gone.ord FROM gone JOIN reinserted USING (id)
), wakeup AS (
    SELECT count(*) AS sent
    FROM (SELECT pg_notify($9::text, $10::text) FROM (SELECT 1 FROM done LIMIT 1) AS first_row) AS n
), gone_runs AS (
    SELECT DISTINCT i.id FROM input AS i
    WHERE i.recurring_key IS NOT NULL AND i.dependents
      AND NOT EXISTS (SELECT 1 FROM {schema}.recurring AS r WHERE r.key = i.recurring_key)
      AND NOT EXISTS (SELECT 1 FROM {schema}.calls AS c WHERE c.id = i.id)
), dropped AS (
    -- A run that is not stored again because its schedule is gone will not run again:
    -- the store ends the calls waiting for it in a transaction of its own, which
    -- deletes its record as a started prerequisite too (see started_drop). Left here,
    -- the record is still there if that transaction never commits: a put back tried
    -- again answers it again, and once it expires any lease keeper ends them.
    SELECT s.call_id FROM {schema}.started_prerequisites AS s
    JOIN gone_runs AS g ON s.call_id = g.id
)
SELECT done.ord, NULL::bigint AS dropped FROM done CROSS JOIN wakeup
UNION ALL
SELECT NULL, call_id FROM dropped;

-- name: renew
-- Owner $2's leases on calls $3, and its records of started prerequisites among them,
-- last until $1; returns the ids renewed.
WITH leased AS (
    UPDATE {schema}.calls SET due_at = $1
    WHERE lease_owner = $2 AND id = ANY($3::bigint[])
    RETURNING id
), started AS (
    UPDATE {schema}.started_prerequisites SET expires_at = $1
    WHERE owner = $2 AND call_id = ANY($3::bigint[])
    RETURNING call_id
)
SELECT id FROM leased
UNION ALL
SELECT call_id FROM started;

-- name: complete
-- The rows of many finished calls of one owner in one statement (calls finishing
-- together share a round trip and a commit); a row goes only while $1 owns it.
-- Returns the ids deleted. A row other calls wait for is left to complete_prerequisite
-- (its dependents' edges must be read by a later statement of the same transaction).
DELETE FROM {schema}.calls
WHERE id = ANY($2::bigint[]) AND lease_owner = $1::text AND NOT dependents
RETURNING id;

-- name: release_many
-- End many leases in one statement (see stores/postgres/_grouped.py): the row of call
-- $1[i] is pending again, due at $3[i], with $4[i] (0 or 1) attempts taken back, if
-- $2[i] still holds its lease. The same call and owner twice: released by the first.
-- NOTIFY $5 with $6 in the same statement if any was released. Returns the positions
-- (1-based) of the input rows released.
WITH input AS (
    SELECT *
    FROM unnest($1::bigint[], $2::text[], $3::timestamptz[], $4::integer[])
        WITH ORDINALITY AS t (id, owner, due_at, refund, ord)
), updated AS (
    UPDATE {schema}.calls AS c
    SET lease_owner = NULL, due_at = i.due_at, attempts = greatest(c.attempts - i.refund, 0)
    FROM (SELECT DISTINCT ON (id, owner) * FROM input ORDER BY id, owner, ord) AS i
    WHERE c.id = i.id AND c.lease_owner = i.owner
    RETURNING i.ord
), wakeup AS (
    SELECT count(*) AS sent
    FROM (SELECT pg_notify($5::text, $6::text) FROM (SELECT 1 FROM updated LIMIT 1) AS first_row) AS n
)
SELECT updated.ord FROM updated CROSS JOIN wakeup;

-- name: dead_letter_many
-- Many calls kept as dead letters in one statement (see stores/postgres/_grouped.py).
-- A row with an owner ($10[i]) is kept only while that owner still holds the leased
-- row, which goes in the same statement (the same call and owner twice: kept once, by
-- the first); if the lease was lost (another worker has the call), nothing is written
-- for it. Without an owner the row went with its claim. A leased row other calls wait
-- for is not kept here (the store keeps it with dead_letter_prerequisite, which ends
-- its dependents too). The new ids are drawn first,
-- so that each can be paired with its input row. Returns (position, new id) of each
-- input row kept.
WITH input AS (
    SELECT *
    FROM unnest(
        $1::bigint[], $2::text[], $3::text[], $4::timestamptz[], $5::text[],
        $6::timestamptz[], $7::timestamptz[], $8::text[], $9::integer[], $10::text[]
    ) WITH ORDINALITY AS t (
        call_id, name, payload, due_at, identifier, scheduled_at, failed_at, error, attempts,
        owner, ord
    )
), removed AS (
    DELETE FROM {schema}.calls AS c
    USING input AS i
    WHERE i.owner IS NOT NULL AND c.id = i.call_id AND c.lease_owner = i.owner
      AND NOT c.dependents
    RETURNING c.id, c.lease_owner
), kept AS MATERIALIZED (
    SELECT nextval(pg_get_serial_sequence('{schema}.dead_letters', 'id')) AS new_id, i.*
    FROM input AS i
    WHERE i.owner IS NULL
       OR (
           EXISTS (SELECT 1 FROM removed AS r WHERE r.id = i.call_id AND r.lease_owner = i.owner)
           AND i.ord = (
               SELECT min(j.ord) FROM input AS j WHERE j.call_id = i.call_id AND j.owner = i.owner
           )
       )
), inserted AS (
    INSERT INTO {schema}.dead_letters
        (id, call_id, name, payload, due_at, identifier, scheduled_at, failed_at, error, attempts)
    OVERRIDING SYSTEM VALUE
    SELECT new_id, call_id, name, payload, due_at, identifier, scheduled_at, failed_at, error,
        attempts
    FROM kept
    ORDER BY ord
)
SELECT ord, new_id FROM kept;

-- name: dead_letters
SELECT id, call_id, name, payload, due_at, identifier, scheduled_at, failed_at, error, attempts
FROM {schema}.dead_letters
WHERE ($1::text IS NULL OR name = $1::text)
ORDER BY failed_at, id
LIMIT $2::bigint;

-- name: requeue_dead_letter
-- Move one dead letter back to pending and NOTIFY, in one statement. (At priority 0:
-- a dead letter does not keep its priority.)
WITH taken AS (
    DELETE FROM {schema}.dead_letters WHERE id = $1
    RETURNING name, payload, identifier, scheduled_at
), inserted AS (
    INSERT INTO {schema}.calls (name, payload, due_at, identifier, scheduled_at)
    SELECT name, payload, $2::timestamptz, identifier, scheduled_at FROM taken
    RETURNING id
), wakeup AS (
    SELECT count(*) AS sent FROM (SELECT pg_notify($3::text, $4::text) FROM inserted) AS n
)
SELECT inserted.id FROM inserted CROSS JOIN wakeup;

-- name: purge_dead_letters
WITH deleted AS (DELETE FROM {schema}.dead_letters WHERE id = ANY($1::bigint[]) RETURNING 1)
SELECT count(*) FROM deleted;

-- name: purge_all_dead_letters
WITH deleted AS (DELETE FROM {schema}.dead_letters RETURNING 1)
SELECT count(*) FROM deleted;

-- Recurring schedules. The columns, in this order, are stores/_rows.RECURRING_COLUMNS.

-- name: recurring_insert_new
-- Register a key not stored yet; nothing (no row returned) if it exists.
INSERT INTO {schema}.recurring (key, name, payload, identifier, cron, every, timezone, start_at, end_at, misfire,
    overlap, anchor, next_tick, last_tick, last_call_id, runs, skipped_overlap,
    skipped_misfire, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)
ON CONFLICT (key) DO NOTHING
RETURNING key;

-- name: recurring_lock
SELECT key, name, payload, identifier, cron, every, timezone, start_at, end_at, misfire,
    overlap, anchor, next_tick, last_tick, last_call_id, runs, skipped_overlap,
    skipped_misfire, created_at, updated_at
FROM {schema}.recurring WHERE key = $1 FOR UPDATE;

-- name: recurring_put
-- Store a schedule (as a whole) under its key.
INSERT INTO {schema}.recurring (key, name, payload, identifier, cron, every, timezone, start_at, end_at, misfire,
    overlap, anchor, next_tick, last_tick, last_call_id, runs, skipped_overlap,
    skipped_misfire, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)
ON CONFLICT (key) DO UPDATE SET
    name = EXCLUDED.name, payload = EXCLUDED.payload, identifier = EXCLUDED.identifier,
    cron = EXCLUDED.cron, every = EXCLUDED.every, timezone = EXCLUDED.timezone,
    start_at = EXCLUDED.start_at, end_at = EXCLUDED.end_at, misfire = EXCLUDED.misfire,
    overlap = EXCLUDED.overlap, anchor = EXCLUDED.anchor, next_tick = EXCLUDED.next_tick,
    last_tick = EXCLUDED.last_tick, last_call_id = EXCLUDED.last_call_id,
    runs = EXCLUDED.runs, skipped_overlap = EXCLUDED.skipped_overlap,
    skipped_misfire = EXCLUDED.skipped_misfire, created_at = EXCLUDED.created_at,
    updated_at = EXCLUDED.updated_at;

-- name: recurring_delete
-- Cancelling a schedule, first statement (it waits for a fire in progress).
DELETE FROM {schema}.recurring WHERE key = $1 RETURNING key;

-- name: recurring_stop
-- A schedule whose fire cannot be written: it stops (no next tick) instead of
-- failing every fire.
UPDATE {schema}.recurring SET next_tick = NULL WHERE key = $1;

-- name: recurring_list
SELECT key, name, payload, identifier, cron, every, timezone, start_at, end_at, misfire,
    overlap, anchor, next_tick, last_tick, last_call_id, runs, skipped_overlap,
    skipped_misfire, created_at, updated_at
FROM {schema}.recurring WHERE ($1::text IS NULL OR key = $1::text) ORDER BY key;

-- name: recurring_due
-- The due schedules, earliest first, locked for this fire; a schedule another worker
-- is firing is skipped (its tick is that worker's).
SELECT key, name, payload, identifier, cron, every, timezone, start_at, end_at, misfire,
    overlap, anchor, next_tick, last_tick, last_call_id, runs, skipped_overlap,
    skipped_misfire, created_at, updated_at
FROM {schema}.recurring WHERE next_tick <= $1::timestamptz
ORDER BY next_tick, key
LIMIT $2::integer
FOR UPDATE SKIP LOCKED;

-- name: recurring_active
-- Keys (of $1) with a run in the store: pending, waiting for a retry, or leased.
SELECT DISTINCT recurring_key FROM {schema}.calls WHERE recurring_key = ANY($1::text[]);

-- name: recurring_after_fire
-- After this transaction's fires: the earliest next tick still ahead, and whether a
-- schedule is still due (locked by another worker's fire, or beyond this batch).
-- (Two scans of the next_tick index, not of the table.)
SELECT (SELECT min(next_tick) FROM {schema}.recurring WHERE next_tick > $1::timestamptz),
    EXISTS (SELECT 1 FROM {schema}.recurring WHERE next_tick <= $1::timestamptz);

-- Dependencies between calls (see stores/_dependencies.py and migration 0007). These
-- run inside transactions the store opens (stores/postgres/_dependencies.py): a
-- statement that reads edges runs after the one that took the rows' locks, so that
-- its snapshot shows every edge committed by a transaction that held them.

-- name: dependency_lock_calls
-- The prerequisites $1 that are rows of calls (pending or leased), marked as having
-- dependents, locked in id order (concurrent batches naming the same calls cannot
-- deadlock). Returns their ids.
UPDATE {schema}.calls AS c SET dependents = true
FROM (
    SELECT id FROM {schema}.calls WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE
) AS locked
WHERE c.id = locked.id
RETURNING c.id;

-- name: dependency_lock_started
-- The prerequisites $1 that run as started at-most-once calls; their records are
-- locked until this transaction ends (their end waits for it).
SELECT call_id FROM {schema}.started_prerequisites
WHERE call_id = ANY($1::bigint[])
ORDER BY call_id
FOR SHARE;

-- name: dependency_failed
-- Whether call $1 is a dead letter.
SELECT EXISTS (SELECT 1 FROM {schema}.dead_letters WHERE call_id = $1::bigint);

-- name: insert_waiting_calls
-- Calls of a batch with dependencies, in input order (ids grow in input order), each
-- with its count of prerequisites ($6) and whether later calls of the batch wait for
-- it ($7).
WITH input AS (
    SELECT *
    FROM unnest(
        $1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::timestamptz[],
        $6::integer[], $7::boolean[], $8::integer[], $9::integer[], $10::text[],
        $11::timestamptz[]
    ) WITH ORDINALITY AS t (
        name, payload, due_at, identifier, scheduled_at, waiting, dependents, attempts,
        priority, recurring_key, tick_at, ord
    )
)
INSERT INTO {schema}.calls
    (name, payload, due_at, identifier, scheduled_at, waiting, dependents, attempts, priority,
    recurring_key, tick_at)
SELECT name, payload, due_at, identifier, scheduled_at, waiting, dependents, attempts, priority,
    recurring_key, tick_at
FROM input ORDER BY ord
RETURNING id;

-- name: insert_dependencies
INSERT INTO {schema}.call_dependencies (prerequisite_id, call_id)
SELECT * FROM unnest($1::bigint[], $2::bigint[])
ON CONFLICT DO NOTHING;

-- name: dependency_lock_dependents
-- Lock the rows of the calls waiting for prerequisites $1, in id order, before their
-- edges are touched (every transaction takes rows before edges).
SELECT id FROM {schema}.calls
WHERE id IN (
    SELECT call_id FROM {schema}.call_dependencies WHERE prerequisite_id = ANY($1::bigint[])
)
ORDER BY id
FOR UPDATE;

-- name: release_dependents
-- Prerequisites $1 succeeded: their edges go, and each dependent waits for one fewer.
-- Returns the dependents that wait for nothing now, with their due times; if there
-- are any, NOTIFY $2 with the earliest due time (in the payload format of
-- stores/postgres/_listener.notify_payload: epoch microseconds as text).
WITH gone AS (
    DELETE FROM {schema}.call_dependencies WHERE prerequisite_id = ANY($1::bigint[])
    RETURNING call_id
), counted AS (
    SELECT call_id, count(*)::integer AS n FROM gone GROUP BY call_id
), updated AS (
    UPDATE {schema}.calls AS c SET waiting = greatest(c.waiting - counted.n, 0)
    FROM counted
    WHERE c.id = counted.call_id
    RETURNING c.id, c.waiting, c.due_at
), ready AS (
    SELECT id, due_at FROM updated WHERE waiting = 0
), wakeup AS (
    SELECT count(*) AS sent
    FROM (
        SELECT pg_notify($2::text, floor(extract(epoch FROM min(due_at)) * 1000000)::bigint::text)
        FROM ready HAVING count(*) > 0
    ) AS n
)
SELECT ready.id, ready.due_at FROM ready CROSS JOIN wakeup;

-- name: dependency_closure
-- Every edge reachable from prerequisites $1 (their dependents, theirs, ...).
WITH RECURSIVE reach (prerequisite_id, call_id) AS (
    SELECT prerequisite_id, call_id FROM {schema}.call_dependencies
    WHERE prerequisite_id = ANY($1::bigint[])
    UNION
    SELECT d.prerequisite_id, d.call_id
    FROM {schema}.call_dependencies AS d
    JOIN reach AS r ON d.prerequisite_id = r.call_id
)
SELECT prerequisite_id, call_id FROM reach;

-- name: dependency_lock_rows
-- Lock the rows $1 (dependents about to be ended), in id order.
SELECT id FROM {schema}.calls WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE;

-- name: dependency_end
-- Prerequisites $1 ended without success: the edges from them go; the dependents $2
-- (found by dependency_closure, rows locked) become dead letters, each with its reason
-- $3, failed at $4, their own edges going too. Returns how many dead letters.
WITH reasons AS (
    SELECT * FROM unnest($2::bigint[], $3::text[]) AS t (id, error)
), moved AS (
    DELETE FROM {schema}.calls AS c USING reasons AS r
    WHERE c.id = r.id
    RETURNING c.id, c.name, c.payload, c.due_at, c.identifier, c.scheduled_at, c.attempts,
        r.error
), edges AS (
    DELETE FROM {schema}.call_dependencies AS d
    WHERE d.prerequisite_id = ANY($1::bigint[]) OR d.call_id = ANY($2::bigint[])
       OR d.prerequisite_id = ANY($2::bigint[])
), kept AS (
    INSERT INTO {schema}.dead_letters
        (call_id, name, payload, due_at, identifier, scheduled_at, failed_at, error, attempts)
    SELECT id, name, payload, due_at, identifier, scheduled_at, $4::timestamptz, error,
        attempts
    FROM moved
    RETURNING 1
)
SELECT count(*) FROM kept;

-- name: dependency_forget
-- Calls $1 are gone (cancelled, or dead letters with no dependents): their edges as
-- dependents go (their prerequisites may still run).
DELETE FROM {schema}.call_dependencies WHERE call_id = ANY($1::bigint[]);

-- name: any_started_expired
SELECT EXISTS (SELECT 1 FROM {schema}.started_prerequisites WHERE expires_at <= $1);

-- name: end_expired_started
-- The records of started prerequisites that expired by $1 go (one another worker is
-- ending right now is left to it); returns their ids.
DELETE FROM {schema}.started_prerequisites
WHERE call_id IN (
    SELECT call_id FROM {schema}.started_prerequisites
    WHERE expires_at <= $1
    FOR UPDATE SKIP LOCKED
)
RETURNING call_id;

-- name: started_drop
-- Runs $1 of recurring schedules cancelled while they ran were dropped by put_back
-- (see put_back_many): their records go (locked: a schedule after one of them is
-- waited for). Returns the ids whose record was there.
DELETE FROM {schema}.started_prerequisites WHERE call_id = ANY($1::bigint[])
RETURNING call_id;

-- name: started_end
-- The end of started at-most-once prerequisite $1 is told: its record goes. Returns
-- its id if there was one.
DELETE FROM {schema}.started_prerequisites WHERE call_id = $1::bigint RETURNING call_id;

-- name: complete_prerequisite
-- A finished call other calls wait for: its leased row goes while $1 owns it (the
-- store then releases its dependents in a later statement of the same transaction).
DELETE FROM {schema}.calls WHERE id = $2::bigint AND lease_owner = $1::text RETURNING id;

-- name: dead_letter_prerequisite
-- Keep call $1 as a dead letter (the row values given), deleting its leased row while
-- $10 owns it (NULL: the row went with its claim; its record as a started
-- prerequisite goes instead). Returns the dead letter's id, or nothing if the lease
-- was lost.
WITH removed AS (
    DELETE FROM {schema}.calls
    WHERE $10::text IS NOT NULL AND id = $1::bigint AND lease_owner = $10::text
    RETURNING id
), unstarted AS (
    DELETE FROM {schema}.started_prerequisites
    WHERE $10::text IS NULL AND call_id = $1::bigint
)
INSERT INTO {schema}.dead_letters
    (call_id, name, payload, due_at, identifier, scheduled_at, failed_at, error, attempts)
SELECT $1::bigint, $2::text, $3::text, $4::timestamptz, $5::text, $6::timestamptz,
    $7::timestamptz, $8::text, $9::integer
WHERE $10::text IS NULL OR EXISTS (SELECT 1 FROM removed)
RETURNING id;

-- name: cancel
-- cancel, in a transaction: the row goes if pending; returns (id, dependents, waiting).
DELETE FROM {schema}.calls WHERE id = $1 AND lease_owner IS NULL
RETURNING id, dependents, waiting > 0;

-- name: cancel_identifier
DELETE FROM {schema}.calls WHERE identifier = $1 AND lease_owner IS NULL
RETURNING id, dependents, waiting > 0;

-- name: dead_letter_due
-- dead_letter_due, in a transaction: as dead_letter_due, returning (id, dependents,
-- waiting) of each row moved.
WITH moved AS (
    DELETE FROM {schema}.calls
    WHERE id IN (
        SELECT id FROM {schema}.calls
        WHERE name = $1::text AND due_at <= $2::timestamptz
        FOR UPDATE SKIP LOCKED
    )
    RETURNING id, name, payload, due_at, identifier, scheduled_at, attempts, dependents,
        waiting
), kept AS (
    INSERT INTO {schema}.dead_letters
        (call_id, name, payload, due_at, identifier, scheduled_at, failed_at, error, attempts)
    SELECT id, name, payload, due_at, identifier, scheduled_at, $4::timestamptz, $3::text,
        attempts
    FROM moved
)
SELECT id, dependents, waiting > 0 FROM moved;

-- name: recurring_delete_runs
-- Cancelling a schedule, second statement: its runs that have not started (leased
-- rows are running); returns (id, dependents, waiting) of each.
DELETE FROM {schema}.calls WHERE recurring_key = $1 AND lease_owner IS NULL
RETURNING id, dependents, waiting > 0;

-- name: requeue_take
-- Take dead letter $1 out (for requeue_dead_letter with prerequisites).
DELETE FROM {schema}.dead_letters WHERE id = $1
RETURNING name, payload, identifier, scheduled_at;

-- name: set_cluster_limit
-- Store limit ($1 kind, $2 name) with $3 tokens (and window $4 microseconds, rate
-- only), set at $5 by $6, replacing the one stored; make sure tokens 0 .. $3 - 1
-- exist, and drop tokens beyond them that no call holds. NOTIFY $7 with $8 (a larger
-- limit has free tokens at once). Returns the limit stored before, if any.
WITH previous AS (
    SELECT kind, name, tokens, per_us, set_at, set_by FROM {schema}.cluster_limits
    WHERE kind = $1::text AND name = $2::text
), stored AS (
    INSERT INTO {schema}.cluster_limits (kind, name, tokens, per_us, set_at, set_by)
    VALUES ($1::text, $2::text, $3::integer, $4::bigint, $5::timestamptz, $6::text)
    ON CONFLICT (kind, name) DO UPDATE
    SET tokens = excluded.tokens, per_us = excluded.per_us, set_at = excluded.set_at,
        set_by = excluded.set_by
), slots AS (
    INSERT INTO {schema}.cluster_tokens (kind, name, slot)
    SELECT $1::text, $2::text, g FROM generate_series(0, $3::integer - 1) AS g
    ON CONFLICT DO NOTHING
), beyond AS (
    DELETE FROM {schema}.cluster_tokens
    WHERE kind = $1::text AND name = $2::text AND slot >= $3::integer AND call_id IS NULL
), wakeup AS (
    SELECT pg_notify($7::text, $8::text) AS sent
)
SELECT previous.*, (SELECT count(*) FROM wakeup) AS notified FROM previous
RIGHT JOIN (SELECT 1) AS one ON true;

-- name: remove_cluster_limit
-- Drop limit ($1 kind, $2 name) and its tokens; NOTIFY $3 with $4 (calls it held back
-- may start). Returns one row if it existed.
WITH gone AS (
    DELETE FROM {schema}.cluster_limits WHERE kind = $1::text AND name = $2::text
    RETURNING kind
), tokens AS (
    DELETE FROM {schema}.cluster_tokens WHERE kind = $1::text AND name = $2::text
), wakeup AS (
    SELECT count(*) AS sent
    FROM (SELECT pg_notify($3::text, $4::text) FROM (SELECT 1 FROM gone LIMIT 1) AS first_row) AS n
)
SELECT gone.kind FROM gone CROSS JOIN wakeup;

-- name: cluster_limits
SELECT kind, name, tokens, per_us, set_at, set_by FROM {schema}.cluster_limits
ORDER BY name, kind;

-- name: free_tokens
-- The concurrency tokens held for calls $2[i] by worker $1[i] are free again, for many
-- requests in one statement (see stores/postgres/_grouped.py); NOTIFY $3 with $4 if
-- any was (a claim held back by the limit may take it now). Returns the positions
-- (1-based) of the input rows that freed a token, once per token.
WITH input AS (
    SELECT * FROM unnest($1::text[], $2::bigint[]) WITH ORDINALITY AS i (owner, call_id, ord)
), freed AS (
    UPDATE {schema}.cluster_tokens AS t
    SET call_id = NULL, owner = NULL, holder_expires_at = NULL
    FROM (SELECT DISTINCT ON (owner, call_id) * FROM input ORDER BY owner, call_id, ord) AS i
    WHERE t.owner = i.owner AND t.call_id = i.call_id
    RETURNING i.ord
), wakeup AS (
    SELECT count(*) AS sent
    FROM (SELECT pg_notify($3::text, $4::text) FROM (SELECT 1 FROM freed LIMIT 1) AS first_row) AS n
)
SELECT freed.ord FROM freed CROSS JOIN wakeup;

-- name: pause
-- Pause name $1 from $2 (table paused of migration 0008); a name paused already keeps
-- its time. Returns a row if it was not paused.
INSERT INTO {schema}.paused (name, paused_at) VALUES ($1::text, $2::timestamptz)
ON CONFLICT (name) DO NOTHING
RETURNING true;

-- name: resume
-- End name $1's pause; true if it was paused. Then, in the same statement, NOTIFY
-- channel $2 with payload $3 (the epoch: every dispatcher claims again at once),
-- delivered when the statement commits.
WITH gone AS (
    DELETE FROM {schema}.paused WHERE name = $1::text RETURNING name
), wakeup AS (
    SELECT pg_notify($2::text, $3::text) FROM gone
)
-- (Counting wakeup is what runs it: a CTE no one reads is not evaluated.)
SELECT EXISTS (SELECT FROM gone) AND (SELECT count(*) FROM wakeup) >= 0;

-- name: paused
SELECT name, paused_at FROM {schema}.paused ORDER BY name;

-- name: worker_register
-- Insert a worker's row, or replace the row with its id.
INSERT INTO {schema}.workers
    (id, host, pid, started_at, heartbeat_at, expires_at, running, limits)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (id) DO UPDATE SET
    host = excluded.host, pid = excluded.pid, started_at = excluded.started_at,
    heartbeat_at = excluded.heartbeat_at, expires_at = excluded.expires_at,
    running = excluded.running, limits = excluded.limits;

-- name: worker_heartbeat
-- Renew worker $1's row at $2 (now) until $3, with $4 running calls, and delete every
-- row that expired by $2, in one statement. The two touch disjoint rows (expired or
-- not), so neither sees the other's change. A row that expired by now (this
-- worker's too) is not revived: its worker registers again. True if renewed.
WITH expired AS (
    DELETE FROM {schema}.workers WHERE expires_at <= $2::timestamptz
), renewed AS (
    UPDATE {schema}.workers
    SET heartbeat_at = $2::timestamptz, expires_at = $3::timestamptz, running = $4::integer
    WHERE id = $1::text AND expires_at > $2::timestamptz
    RETURNING 1
), tokens AS (
    -- The tokens it holds carry its expiry (a claim reads that, never the workers
    -- table: see _claim_quotas). Tokens that expired stay expired: another worker
    -- may have them now, and this worker stopped their calls when it lapsed.
    UPDATE {schema}.cluster_tokens SET holder_expires_at = $3::timestamptz
    WHERE owner = $1::text AND call_id IS NOT NULL AND holder_expires_at > $2::timestamptz
      AND EXISTS (SELECT 1 FROM renewed)
)
SELECT EXISTS (SELECT 1 FROM renewed);

-- name: worker_deregister
-- Delete worker $1's row and free the concurrency tokens it holds, in one statement;
-- if it held any, NOTIFY channel $2 with payload $3 (a slot may be free now).
WITH gone AS (
    DELETE FROM {schema}.workers WHERE id = $1::text
), freed AS (
    UPDATE {schema}.cluster_tokens SET call_id = NULL, owner = NULL, holder_expires_at = NULL
    WHERE owner = $1::text
    RETURNING 1
), wakeup AS (
    SELECT count(*) AS sent
    FROM (SELECT pg_notify($2::text, $3::text) FROM (SELECT 1 FROM freed LIMIT 1) AS f) AS n
)
SELECT (SELECT count(*) FROM freed), (SELECT sent FROM wakeup);

-- name: workers_live
-- The rows not expired by $1, by start then id.
SELECT id, host, pid, started_at, heartbeat_at, expires_at, running, limits
FROM {schema}.workers
WHERE expires_at > $1::timestamptz
ORDER BY started_at, id;

-- name: cancel_leased
-- request_cancel, in a transaction: the leased rows of call $1 (running, or their
-- worker died) go, so that they never run again; returns (id, dependents, waiting).
DELETE FROM {schema}.calls WHERE id = $1 AND lease_owner IS NOT NULL
RETURNING id, dependents, waiting > 0;

-- name: cancel_leased_identifier
DELETE FROM {schema}.calls WHERE identifier = $1 AND lease_owner IS NOT NULL
RETURNING id, dependents, waiting > 0;

-- name: cancel_request_insert
-- Store a request ($1 call id or $2 identifier, requested at $3, until $4) and, in the
-- same statement, NOTIFY channel $5 with payload $6 (CANCEL_REQUESTED), delivered when
-- the transaction commits. Returns the request's id.
WITH stored AS (
    INSERT INTO {schema}.cancel_requests (call_id, identifier, requested_at, expires_at)
    VALUES ($1::bigint, $2::text, $3::timestamptz, $4::timestamptz)
    RETURNING id
), wakeup AS (
    SELECT pg_notify($5::text, $6::text) AS sent
)
-- (Reading wakeup is what runs it: a CTE no one reads is not evaluated.)
SELECT stored.id FROM stored CROSS JOIN wakeup;

-- name: cancel_requests_live
-- The requests not expired by $1, by id; the same statement deletes the expired ones
-- (their acks go with them: ON DELETE CASCADE).
WITH expired AS (
    DELETE FROM {schema}.cancel_requests WHERE expires_at <= $1::timestamptz
)
SELECT id, call_id, identifier, requested_at, expires_at
FROM {schema}.cancel_requests
WHERE expires_at > $1::timestamptz
ORDER BY id;

-- name: cancel_ack
-- Only for a request that is still there; a second ack of a worker replaces its first.
INSERT INTO {schema}.cancel_acks (request_id, worker_id, found)
SELECT $1::bigint, $2::text, $3::integer
WHERE EXISTS (SELECT FROM {schema}.cancel_requests WHERE id = $1::bigint)
ON CONFLICT (request_id, worker_id) DO UPDATE SET found = excluded.found;

-- name: cancel_acks
SELECT worker_id, found FROM {schema}.cancel_acks WHERE request_id = $1 ORDER BY worker_id;
