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

-- name: server_encoding
SHOW server_encoding;

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

-- name: insert_calls
-- Many calls in one statement. Rows are inserted in input order (WITH ORDINALITY +
-- ORDER BY), so identity values grow in input order and "ORDER BY id" returns the ids
-- in the order the calls were given. The NOTIFY is sent in the same statement (it is
-- delivered when the statement's transaction commits).
WITH input AS (
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
SELECT inserted.id FROM inserted CROSS JOIN wakeup ORDER BY inserted.id;

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
WITH input AS (
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
SELECT coalesce(i.id, r.id, h.id) AS id,
    coalesce(i.id, r.id) IS DISTINCT FROM n.new_id AS conflicted,
    n.on_conflict
FROM numbered AS n
LEFT JOIN inserted AS i ON i.id = n.new_id
LEFT JOIN replaced AS r ON r.name = n.name AND r.unique_key = n.unique_key
LEFT JOIN holders AS h ON h.name = n.name AND h.unique_key = n.unique_key
CROSS JOIN wakeup
ORDER BY n.ord;

-- name: cancel
-- Leased rows are running, not pending: they are not cancelled here.
WITH deleted AS (
    DELETE FROM {schema}.calls WHERE id = $1 AND lease_owner IS NULL RETURNING 1
)
SELECT count(*) FROM deleted;

-- name: cancel_identifier
WITH deleted AS (
    DELETE FROM {schema}.calls WHERE identifier = $1 AND lease_owner IS NULL RETURNING 1
)
SELECT count(*) FROM deleted;

-- name: pending
-- A row whose lease expired has no unique key (its claim cleared it).
SELECT id, name, payload, due_at, identifier, scheduled_at, attempts, recurring_key, tick_at,
    priority, unique_key
FROM {schema}.calls
WHERE (lease_owner IS NULL OR due_at <= $6::timestamptz)
  AND ($1::text IS NULL OR name = $1::text)
  AND ($2::text IS NULL OR identifier = $2::text)
  AND ($3::timestamptz IS NULL OR due_at >= $3::timestamptz)
  AND ($4::timestamptz IS NULL OR due_at < $4::timestamptz)
ORDER BY due_at, id
LIMIT $5::bigint;

-- name: pending_counts
-- Per name: pending calls, and those due by $1 (inclusive), in one pass. A row whose
-- lease expired by then is pending again (and due).
SELECT name, count(*), count(*) FILTER (WHERE due_at <= $1::timestamptz)
FROM {schema}.calls
WHERE lease_owner IS NULL OR due_at <= $1::timestamptz
GROUP BY name;

-- name: _claim_picked
-- A fragment (names starting with "_" are not queries), shared by the three claim
-- statements so that they always pick alike: lock the best due rows of each name ($1
-- names, $2 their free slots: highest priority first, then earliest due, then lowest
-- id), at most its slots, skipping rows another claimer holds, keep the best $4
-- across names due by $3.
--
-- Per name, a loose index scan of (name, priority, due_at, id): "levels" walks the
-- name's distinct priorities from the highest down, one backward index seek each,
-- and only as far as the LIMIT pulls (a recursive CTE is evaluated on demand); for
-- each priority, an index range scan of its rows due by $3, earliest first, at most
-- the name's slots: future rows of a priority are never read. The rows found are
-- sorted (priority, due_at, id) before the name's LIMIT, so the order does not rest
-- on the plan; rows read but not kept stay locked only until the statement's
-- transaction ends.
WITH quotas AS (
    SELECT * FROM unnest($1::text[], $2::integer[]) AS q (name, slots)
), picked AS (
    SELECT c.id, c.due_at, c.priority, q.name
    FROM quotas AS q
    CROSS JOIN LATERAL (
        WITH RECURSIVE levels (priority) AS (
            SELECT max(top.priority) FROM {schema}.calls AS top WHERE top.name = q.name
            UNION ALL
            SELECT (
                SELECT max(lower.priority) FROM {schema}.calls AS lower
                WHERE lower.name = q.name AND lower.priority < levels.priority
            )
            FROM levels
            WHERE levels.priority IS NOT NULL
        )
        SELECT due.id, due.due_at, levels.priority
        FROM levels
        CROSS JOIN LATERAL (
            SELECT calls.id, calls.due_at FROM {schema}.calls AS calls
            WHERE calls.name = q.name AND calls.priority = levels.priority
              AND calls.due_at <= $3::timestamptz
            ORDER BY calls.due_at, calls.id
            LIMIT q.slots
            FOR UPDATE SKIP LOCKED
        ) AS due
        -- (Stated, not assumed from the plan: at most q.slots rows per level were
        -- read and locked, so this sort is small.)
        ORDER BY levels.priority DESC, due.due_at, due.id
        LIMIT q.slots
    ) AS c
    ORDER BY c.priority DESC, c.due_at, c.id
    LIMIT $4::integer
)

-- name: _claim_next
-- A fragment following _claim_picked: once the picks are taken, the earliest due row
-- of each name that still has room (its quota not used up, and the total $4 not
-- reached), leaving out the picked rows themselves. One index seek per such name.
room AS (
    SELECT q.name FROM quotas AS q
    WHERE q.slots > (SELECT count(*) FROM picked AS p WHERE p.name = q.name)
      AND (SELECT count(*) FROM picked) < $4::integer
), upcoming AS (
    SELECT min(first.due_at) AS next_due
    FROM room
    CROSS JOIN LATERAL (
        SELECT c.due_at FROM {schema}.calls AS c
        WHERE c.name = room.name AND NOT EXISTS (SELECT 1 FROM picked AS p WHERE p.id = c.id)
        ORDER BY c.due_at, c.id
        LIMIT 1
    ) AS first
)

-- name: _claim_result
-- A fragment ending each claim statement: the taken calls, then one row whose id is
-- NULL and whose last column is the next due time (see _claim_next).
SELECT id, name, payload, due_at, identifier, scheduled_at, attempts, recurring_key, tick_at,
    priority, NULL::timestamptz AS next_due
FROM taken
UNION ALL
SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, next_due FROM upcoming

-- name: claim
-- Every claim statement deletes rows (or leases them) and commits before asyncpg reads
-- its reply: nothing it returns may fail to convert to Python, or those calls would
-- be gone without reaching the dispatcher. The CHECKs of migration 0003 keep every
-- stored time within what Python holds, and the attempt count goes up only to their
-- bound (1000000), so it can neither overflow nor make the claim fail forever.
--
-- One statement: lock the best due rows of each name (at most its free slots; see
-- _claim_picked), skipping rows another claimer holds, keep the best `limit` across
-- names, then
-- delete them (at-most-once) or, for names in $5, lease them to $6 until $7
-- (at-least-once; an expired lease's row is due again, since its due_at is the
-- expiry). Either way the claim frees the row's unique key (a leased row's is set to
-- NULL). Returns each call with its due time before the claim and its new attempt
-- count. Rows locked but not kept are unlocked when the statement's transaction ends.
{_claim_picked}, {_claim_next}, deleted AS (
    DELETE FROM {schema}.calls
    WHERE id IN (SELECT id FROM picked) AND NOT (name = ANY($5::text[]))
    RETURNING id, name, payload, due_at, identifier, scheduled_at,
        least(attempts + 1, 1000000) AS attempts, recurring_key, tick_at, priority
), leased AS (
    UPDATE {schema}.calls AS c
    SET lease_owner = $6::text, due_at = $7::timestamptz,
        attempts = least(c.attempts + 1, 1000000), unique_key = NULL
    FROM picked AS p
    WHERE c.id = p.id AND c.name = ANY($5::text[])
    RETURNING c.id, c.name, c.payload, p.due_at, c.identifier, c.scheduled_at, c.attempts,
        c.recurring_key, c.tick_at, c.priority
), taken AS (
    SELECT * FROM deleted
    UNION ALL
    SELECT * FROM leased
)
{_claim_result};

-- name: claim_delete
-- The claim when no name is leased (at-most-once only): the same picks as "claim",
-- deleted, without the lease branch (a cheaper statement to plan and run).
{_claim_picked}, {_claim_next}, taken AS (
    DELETE FROM {schema}.calls
    WHERE id IN (SELECT id FROM picked)
    RETURNING id, name, payload, due_at, identifier, scheduled_at,
        least(attempts + 1, 1000000) AS attempts, recurring_key, tick_at, priority
)
{_claim_result};

-- name: claim_lease
-- The claim when every name is leased (at-least-once only): the same picks as
-- "claim", leased to $5 until $6, without the delete branch.
{_claim_picked}, {_claim_next}, taken AS (
    UPDATE {schema}.calls AS c
    SET lease_owner = $5::text, due_at = $6::timestamptz,
        attempts = least(c.attempts + 1, 1000000), unique_key = NULL
    FROM picked AS p
    WHERE c.id = p.id
    RETURNING c.id, c.name, c.payload, p.due_at, c.identifier, c.scheduled_at, c.attempts,
        c.recurring_key, c.tick_at, c.priority
)
{_claim_result};

-- name: put_back_many
-- Calls made pending again exactly as given (due time, attempts), under their ids, in
-- one statement for many requests at once (see stores/postgres/_grouped.py): a row
-- leased by the row's owner ($8, NULL for none) has its lease ended; a row that is gone
-- (deleted by its claim) is inserted again with its old id. A row that exists
-- otherwise (pending already, or another worker's) is left alone. The same call given
-- twice is put back once, by its first mention. NOTIFY $9 with $10 in the same
-- statement if anything was put back. Returns the positions (1-based) of the input
-- rows put back.
WITH input AS (
    SELECT *
    FROM unnest(
        $1::bigint[], $2::text[], $3::text[], $4::timestamptz[], $5::text[],
        $6::timestamptz[], $7::integer[], $8::text[], $11::text[], $12::timestamptz[],
        $13::integer[]
    ) WITH ORDINALITY AS t (
        id, name, payload, due_at, identifier, scheduled_at, attempts, owner, recurring_key,
        tick_at, priority, ord
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
        priority)
    OVERRIDING SYSTEM VALUE
    SELECT id, name, payload, due_at, identifier, scheduled_at, attempts, recurring_key, tick_at,
        priority
    FROM gone
    ON CONFLICT (id) DO NOTHING
    RETURNING id
), done AS (
    SELECT ord FROM released
    UNION ALL
    SELECT gone.ord FROM gone JOIN reinserted USING (id)
), wakeup AS (
    SELECT count(*) AS sent
    FROM (SELECT pg_notify($9::text, $10::text) FROM (SELECT 1 FROM done LIMIT 1) AS first_row) AS n
)
SELECT done.ord FROM done CROSS JOIN wakeup;

-- name: renew
UPDATE {schema}.calls SET due_at = $1
WHERE lease_owner = $2 AND id = ANY($3::bigint[])
RETURNING id;

-- name: complete
-- The rows of many finished calls of one owner in one statement (calls finishing
-- together share a round trip and a commit); a row goes only while $1 owns it.
-- Returns the ids deleted.
DELETE FROM {schema}.calls WHERE id = ANY($2::bigint[]) AND lease_owner = $1::text
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
-- for it. Without an owner the row went with its claim. The new ids are drawn first,
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

-- name: dead_letter_due
-- Every row named $1 due by $2 (an expired lease's row is due; a live lease's is not)
-- moves to dead letters with error $3, failed at $4, in one statement. Rows another
-- claimer holds locked right now are skipped (they are being started).
WITH moved AS (
    DELETE FROM {schema}.calls
    WHERE id IN (
        SELECT id FROM {schema}.calls
        WHERE name = $1::text AND due_at <= $2::timestamptz
        FOR UPDATE SKIP LOCKED
    )
    RETURNING id, name, payload, due_at, identifier, scheduled_at, attempts
), kept AS (
    INSERT INTO {schema}.dead_letters
        (call_id, name, payload, due_at, identifier, scheduled_at, failed_at, error, attempts)
    SELECT id, name, payload, due_at, identifier, scheduled_at, $4::timestamptz, $3::text,
        attempts
    FROM moved
    RETURNING 1
)
SELECT count(*) FROM kept;

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

-- name: recurring_delete_runs
-- Cancelling a schedule, second statement: its runs that have not started (leased
-- rows are running).
DELETE FROM {schema}.calls WHERE recurring_key = $1 AND lease_owner IS NULL;

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
