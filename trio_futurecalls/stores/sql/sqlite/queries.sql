-- name: insert_call
INSERT INTO futurecalls_calls
    (name, payload, due_at, identifier, scheduled_at, attempts, recurring_key, tick_at, priority)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
RETURNING id;

-- name: insert_keyed_call
-- A call with a unique key: stored unless a pending call of that name holds the key
-- (the partial unique index of migration 0004 decides); no row back then.
INSERT INTO futurecalls_calls
    (name, payload, due_at, identifier, scheduled_at, attempts, unique_key, priority)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (name, unique_key) WHERE unique_key IS NOT NULL DO NOTHING
RETURNING id;

-- name: keyed_call
-- The pending call holding a name's unique key (in the transaction that just found it).
SELECT id FROM futurecalls_calls WHERE name = ? AND unique_key = ?;

-- name: replace_keyed_call
-- on_conflict="replace": the pending call holding the key gets the new payload, due
-- time, identifier and priority.
UPDATE futurecalls_calls SET payload = ?, due_at = ?, identifier = ?, priority = ? WHERE id = ?;

-- name: cancel
-- Leased rows are running, not pending: they are not cancelled here.
DELETE FROM futurecalls_calls WHERE id = ? AND lease_owner IS NULL;

-- name: cancel_identifier
DELETE FROM futurecalls_calls WHERE identifier = ? AND lease_owner IS NULL;

-- name: pending
-- A row whose lease expired has no unique key (its claim cleared it).
SELECT id, name, payload, due_at, identifier, scheduled_at, attempts, recurring_key, tick_at,
    priority, unique_key
FROM futurecalls_calls
WHERE (lease_owner IS NULL OR due_at <= :now)
  AND (:name IS NULL OR name = :name)
  AND (:identifier IS NULL OR identifier = :identifier)
  AND (:due_after IS NULL OR due_at >= :due_after)
  AND (:due_before IS NULL OR due_at < :due_before)
ORDER BY due_at, id
LIMIT coalesce(:limit, -1);

-- name: pending_counts
-- Per name: pending calls, and those due by the parameter (inclusive). A row whose
-- lease expired by then is pending again (and due).
SELECT name, count(*), count(*) FILTER (WHERE due_at <= ?1) FROM futurecalls_calls
WHERE lease_owner IS NULL OR due_at <= ?1
GROUP BY name;

-- name: next_due_of_name
-- The earliest due row of a name, leaving out the rows a claim just took (a JSON
-- array of ids): one walk of the (name, due_at) index.
SELECT due_at FROM futurecalls_calls
WHERE name = ? AND id NOT IN (SELECT value FROM json_each(?))
ORDER BY due_at
LIMIT 1;

-- name: top_priority
-- The highest priority of a name's rows (one seek of the (name, priority, due_at, id)
-- index); NULL when it has none.
SELECT max(priority) FROM futurecalls_calls WHERE name = ?;

-- name: next_priority
-- The highest priority of a name's rows below a given one (one seek): with
-- top_priority, a walk over the distinct priorities in use, highest first.
SELECT max(priority) FROM futurecalls_calls WHERE name = ? AND priority < ?;

-- name: claim_candidates
-- The earliest due rows of one name and priority, up to the free slots left (an
-- expired lease's row is due: its due_at is the expiry). Attempts as stored: the
-- claim adds one once the row decoded (stores/sqlite/_rows.py).
SELECT id, name, payload, due_at, identifier, scheduled_at, attempts, recurring_key, tick_at,
    priority
FROM futurecalls_calls
WHERE name = ? AND priority = ? AND due_at <= ?
ORDER BY due_at, id
LIMIT ?;

-- name: delete_ids
-- The parameter is a JSON array of ids. (A claim frees the unique keys of the rows
-- it deletes with them.)
DELETE FROM futurecalls_calls WHERE id IN (SELECT value FROM json_each(?));

-- name: lease_ids
-- A claim frees the unique key: the leased row (and, once its lease ends, the call
-- pending again) no longer holds it.
UPDATE futurecalls_calls
SET lease_owner = ?, due_at = ?, attempts = attempts + 1, unique_key = NULL
WHERE id IN (SELECT value FROM json_each(?));

-- name: put_back_leased
-- A leased call made pending again as given (due time, attempts).
UPDATE futurecalls_calls
SET lease_owner = NULL, due_at = ?, attempts = ?
WHERE id = ? AND lease_owner = ?;

-- name: put_back_deleted
-- A call its claim deleted, stored again under its old id, unless a row with that id
-- exists (pending already, or another worker's), or it is a run of a recurring
-- schedule that was cancelled meanwhile (its runs that had not started went with it).
INSERT INTO futurecalls_calls
    (id, name, payload, due_at, identifier, scheduled_at, attempts, recurring_key, tick_at,
    priority)
SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?
WHERE NOT EXISTS (SELECT 1 FROM futurecalls_calls WHERE id = ?1)
  AND (?8 IS NULL OR EXISTS (SELECT 1 FROM futurecalls_recurring WHERE key = ?8));

-- name: renew
UPDATE futurecalls_calls SET due_at = ?
WHERE lease_owner = ? AND id IN (SELECT value FROM json_each(?))
RETURNING id;

-- name: complete
DELETE FROM futurecalls_calls WHERE id = ? AND lease_owner = ?;

-- name: release
UPDATE futurecalls_calls
SET lease_owner = NULL, due_at = ?, attempts = max(attempts - ?, 0)
WHERE id = ? AND lease_owner = ?;

-- name: delete_leased
DELETE FROM futurecalls_calls WHERE id = ? AND lease_owner = ?;

-- name: insert_dead_letter
INSERT INTO futurecalls_dead_letters
    (call_id, name, payload, due_at, identifier, scheduled_at, failed_at, error, attempts)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
RETURNING id;

-- name: dead_letters
SELECT id, call_id, name, payload, due_at, identifier, scheduled_at, failed_at, error, attempts
FROM futurecalls_dead_letters
WHERE (:name IS NULL OR name = :name)
ORDER BY failed_at, id
LIMIT coalesce(:limit, -1);

-- name: take_dead_letter
DELETE FROM futurecalls_dead_letters WHERE id = ?
RETURNING name, payload, identifier, scheduled_at;

-- name: dead_letter_due_rows
-- Rows of one name due by a time (a leased row is due once its lease expired).
INSERT INTO futurecalls_dead_letters
    (call_id, name, payload, due_at, identifier, scheduled_at, failed_at, error, attempts)
SELECT id, name, payload, due_at, identifier, scheduled_at, :failed_at, :error, attempts
FROM futurecalls_calls
WHERE name = :name AND due_at <= :due_by;

-- name: delete_due_rows
DELETE FROM futurecalls_calls WHERE name = :name AND due_at <= :due_by;

-- name: purge_dead_letter
DELETE FROM futurecalls_dead_letters WHERE id = ?;

-- name: purge_all_dead_letters
DELETE FROM futurecalls_dead_letters;

-- Recurring schedules. The columns, in this order, are stores/_rows.RECURRING_COLUMNS.

-- name: recurring_get
SELECT key, name, payload, identifier, cron, every, timezone, start_at, end_at, misfire,
    overlap, anchor, next_tick, last_tick, last_call_id, runs, skipped_overlap,
    skipped_misfire, created_at, updated_at
FROM futurecalls_recurring WHERE key = ?;

-- name: recurring_list
SELECT key, name, payload, identifier, cron, every, timezone, start_at, end_at, misfire,
    overlap, anchor, next_tick, last_tick, last_call_id, runs, skipped_overlap,
    skipped_misfire, created_at, updated_at
FROM futurecalls_recurring WHERE (:key IS NULL OR key = :key) ORDER BY key;

-- name: recurring_put
INSERT OR REPLACE INTO futurecalls_recurring (key, name, payload, identifier, cron, every, timezone, start_at, end_at, misfire,
    overlap, anchor, next_tick, last_tick, last_call_id, runs, skipped_overlap,
    skipped_misfire, created_at, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?);

-- name: recurring_delete
DELETE FROM futurecalls_recurring WHERE key = ?;

-- name: recurring_delete_runs
-- A cancelled schedule's runs that have not started (leased rows are running).
DELETE FROM futurecalls_calls WHERE recurring_key = ? AND lease_owner IS NULL;

-- name: recurring_due
-- rowid first: a row that cannot be read is stopped by it.
SELECT rowid, key, name, payload, identifier, cron, every, timezone, start_at, end_at, misfire,
    overlap, anchor, next_tick, last_tick, last_call_id, runs, skipped_overlap,
    skipped_misfire, created_at, updated_at
FROM futurecalls_recurring WHERE next_tick <= ? ORDER BY next_tick, key LIMIT ?;

-- name: recurring_stop
-- A schedule no worker can read: it stops (no next tick) instead of failing each fire.
UPDATE futurecalls_recurring SET next_tick = NULL WHERE rowid = ?;

-- name: recurring_active
-- A run of the schedule is in the store: pending, waiting for a retry, or leased.
SELECT 1 FROM futurecalls_calls WHERE recurring_key = ? LIMIT 1;

-- name: recurring_due_any
SELECT 1 FROM futurecalls_recurring WHERE next_tick <= ? LIMIT 1;

-- name: recurring_next
SELECT min(next_tick) FROM futurecalls_recurring;
