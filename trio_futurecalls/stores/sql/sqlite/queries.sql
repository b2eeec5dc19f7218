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
-- Leased rows are running, not pending: they are not cancelled here. (What it waited
-- for and what waits for it: stores/sqlite/_dependencies.py.)
DELETE FROM futurecalls_calls WHERE id = ? AND lease_owner IS NULL
RETURNING id, waiting, dependents;

-- name: cancel_identifier
DELETE FROM futurecalls_calls WHERE identifier = ? AND lease_owner IS NULL
RETURNING id, waiting, dependents;

-- name: pending
-- A row whose lease expired has no unique key (its claim cleared it).
-- waiting last: not 0 for a call that waits for prerequisites (their ids: waiting_for).
SELECT id, name, payload, due_at, identifier, scheduled_at, attempts, recurring_key, tick_at,
    priority, unique_key, waiting
FROM futurecalls_calls
WHERE (lease_owner IS NULL OR due_at <= :now)
  AND (:name IS NULL OR name = :name)
  AND (:identifier IS NULL OR identifier = :identifier)
  AND (:due_after IS NULL OR due_at >= :due_after)
  AND (:due_before IS NULL OR due_at < :due_before)
ORDER BY due_at, id
LIMIT coalesce(:limit, -1);

-- name: pending_counts
-- Per name: pending calls, those due by the parameter (inclusive), and those waiting
-- for prerequisites (never due, whatever their time). A row whose lease expired by
-- then is pending again (and due).
SELECT name, count(*), count(*) FILTER (WHERE due_at <= ?1 AND waiting = 0),
    count(*) FILTER (WHERE waiting <> 0)
FROM futurecalls_calls
WHERE lease_owner IS NULL OR due_at <= ?1
GROUP BY name;

-- The claim reads the (name, priority, due_at, id) index, which holds only the rows
-- that wait for nothing (migration 0007): each of its queries says "waiting = 0" to
-- use it, and never reads a waiting row.

-- name: next_due_of_name
-- The earliest due row of a name that waits for nothing, leaving out the rows a claim
-- just took (a JSON array of ids): for each priority in use (walked as top_priority
-- and next_priority do), the first row in due order; two seeks per priority, however
-- many rows wait or are due later.
WITH RECURSIVE levels(priority) AS (
    SELECT max(priority) FROM futurecalls_calls WHERE name = ?1 AND waiting = 0
    UNION ALL
    SELECT (
        SELECT max(priority) FROM futurecalls_calls
        WHERE name = ?1 AND waiting = 0 AND priority < levels.priority
    )
    FROM levels WHERE levels.priority IS NOT NULL
)
SELECT min((
    SELECT due_at FROM futurecalls_calls
    WHERE name = ?1 AND waiting = 0 AND priority = levels.priority
      AND id NOT IN (SELECT value FROM json_each(?2))
    ORDER BY due_at
    LIMIT 1
))
FROM levels WHERE levels.priority IS NOT NULL;

-- name: top_priority
-- The highest priority of a name's rows (one seek of the (name, priority, due_at, id)
-- index); NULL when it has none.
SELECT max(priority) FROM futurecalls_calls WHERE name = ? AND waiting = 0;

-- name: next_priority
-- The highest priority of a name's rows below a given one (one seek): with
-- top_priority, a walk over the distinct priorities in use, highest first.
SELECT max(priority) FROM futurecalls_calls WHERE name = ? AND waiting = 0 AND priority < ?;

-- name: claim_candidates
-- The earliest due rows of one name and priority, up to the free slots left (an
-- expired lease's row is due: its due_at is the expiry). Attempts as stored: the
-- claim adds one once the row decoded (stores/sqlite/_rows.py). dependents last
-- (not 0: calls wait for this one).
SELECT id, name, payload, due_at, identifier, scheduled_at, attempts, recurring_key, tick_at,
    priority, dependents
FROM futurecalls_calls
WHERE name = ? AND waiting = 0 AND priority = ? AND due_at <= ?
ORDER BY due_at, id
LIMIT ?;

-- name: record_started
-- An at-most-once claim of calls with dependents (a JSON array of ids), before it
-- deletes their rows: they run, and calls may still be made to wait for them. Under
-- the claim's lease owner ?3 until ?4 (both NULL: no lease, no expiry).
INSERT OR REPLACE INTO futurecalls_started_prerequisites
    (call_id, name, started_at, owner, expires_at)
SELECT id, name, ?2, ?3, ?4 FROM futurecalls_calls
WHERE id IN (SELECT value FROM json_each(?1));

-- name: renew_started
-- Extend owner ?2's records of started prerequisites among ids ?3 (a JSON array) until
-- ?1; returns the ids renewed.
UPDATE futurecalls_started_prerequisites SET expires_at = ?1
WHERE owner = ?2 AND call_id IN (SELECT value FROM json_each(?3))
RETURNING call_id;

-- name: any_started_expired
SELECT 1 FROM futurecalls_started_prerequisites WHERE expires_at <= ? LIMIT 1;

-- name: end_expired_started
-- The records of started prerequisites that expired by ?1 go; returns their ids.
DELETE FROM futurecalls_started_prerequisites WHERE expires_at <= ?1 RETURNING call_id;

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
-- It has dependents if calls still wait for it.
INSERT INTO futurecalls_calls
    (id, name, payload, due_at, identifier, scheduled_at, attempts, recurring_key, tick_at,
    priority, dependents)
SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,
    EXISTS (SELECT 1 FROM futurecalls_call_dependencies WHERE prerequisite_id = ?1)
WHERE NOT EXISTS (SELECT 1 FROM futurecalls_calls WHERE id = ?1)
  AND (?8 IS NULL OR EXISTS (SELECT 1 FROM futurecalls_recurring WHERE key = ?8));

-- name: run_dropped
-- Whether a call put_back_deleted did not store again was dropped: no row has its id,
-- and it is a run of recurring schedule ?2, which is gone.
SELECT 1
WHERE NOT EXISTS (SELECT 1 FROM futurecalls_calls WHERE id = ?1)
  AND NOT EXISTS (SELECT 1 FROM futurecalls_recurring WHERE key = ?2);

-- name: renew
UPDATE futurecalls_calls SET due_at = ?
WHERE lease_owner = ? AND id IN (SELECT value FROM json_each(?))
RETURNING id;

-- name: complete
DELETE FROM futurecalls_calls WHERE id = ? AND lease_owner = ?
RETURNING dependents;

-- name: release
UPDATE futurecalls_calls
SET lease_owner = NULL, due_at = ?, attempts = max(attempts - ?, 0)
WHERE id = ? AND lease_owner = ?;

-- name: delete_leased
DELETE FROM futurecalls_calls WHERE id = ? AND lease_owner = ?
RETURNING dependents;

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
DELETE FROM futurecalls_calls WHERE name = :name AND due_at <= :due_by
RETURNING id, waiting, dependents;

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
DELETE FROM futurecalls_calls WHERE recurring_key = ? AND lease_owner IS NULL
RETURNING id, waiting, dependents;

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

-- Dependencies between calls (stores/sqlite/_dependencies.py, migration 0007). The
-- parameters named "a JSON array" are ids, as in delete_ids.

-- name: insert_waiting_call
-- A call of a batch with dependencies: how many prerequisites it waits for, and
-- whether a later call of the batch waits for it (0 or 1), last.
INSERT INTO futurecalls_calls
    (name, payload, due_at, identifier, scheduled_at, attempts, recurring_key, tick_at, priority,
    waiting, dependents)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
RETURNING id;

-- name: insert_edges
-- A call (the first parameter) waits for each call of a JSON array.
INSERT INTO futurecalls_call_dependencies (prerequisite_id, call_id)
SELECT value, ?1 FROM json_each(?2);

-- name: mark_prerequisite
-- A call that others are to wait for, if it has a row (pending or leased): it has
-- dependents now.
UPDATE futurecalls_calls SET dependents = 1 WHERE id = ? RETURNING id;

-- name: is_started
-- An at-most-once call with dependents that runs (its row went with its claim).
SELECT 1 FROM futurecalls_started_prerequisites WHERE call_id = ?;

-- name: is_dead_letter
-- Only when a prerequisite is refused (a scan: dead letters have no call_id index).
SELECT 1 FROM futurecalls_dead_letters WHERE call_id = ? LIMIT 1;

-- name: end_started
DELETE FROM futurecalls_started_prerequisites WHERE call_id = ? RETURNING call_id;

-- name: end_started_of
DELETE FROM futurecalls_started_prerequisites
WHERE call_id IN (SELECT value FROM json_each(?));

-- name: succeeded_edges
-- A prerequisite succeeded: its edges go; the calls that waited for it.
DELETE FROM futurecalls_call_dependencies WHERE prerequisite_id = ? RETURNING call_id;

-- name: recount_waiting
-- Calls (a JSON array) that lost edges: what they wait for now, counted from their
-- edges (which are what they wait for; the count only serves the claim's index).
UPDATE futurecalls_calls
SET waiting = (
    SELECT count(*) FROM futurecalls_call_dependencies AS edge
    WHERE edge.call_id = futurecalls_calls.id
)
WHERE id IN (SELECT value FROM json_each(?))
RETURNING id, waiting, due_at;

-- name: dependents_of
SELECT call_id FROM futurecalls_call_dependencies WHERE prerequisite_id = ? ORDER BY call_id;

-- name: forget_waiting
-- Calls gone for good (a JSON array) wait for nothing: their edges go; the calls they
-- waited for.
DELETE FROM futurecalls_call_dependencies WHERE call_id IN (SELECT value FROM json_each(?))
RETURNING prerequisite_id;

-- name: forget_dependents
-- Calls gone for good (a JSON array): the edges of the calls that waited for them
-- (those calls are dead letters by now).
DELETE FROM futurecalls_call_dependencies
WHERE prerequisite_id IN (SELECT value FROM json_each(?));

-- name: clear_dependents
-- Calls (a JSON array) whose last dependent went: no longer marked, so that their
-- claim, completion or cancel costs nothing more.
UPDATE futurecalls_calls SET dependents = 0
WHERE id IN (SELECT value FROM json_each(?)) AND dependents <> 0
  AND NOT EXISTS (
      SELECT 1 FROM futurecalls_call_dependencies AS edge
      WHERE edge.prerequisite_id = futurecalls_calls.id
  );

-- name: doomed_calls
-- Dependents (a JSON array) on their way to dead letters; columns as CALL_COLUMNS.
SELECT id, name, payload, due_at, identifier, scheduled_at, attempts
FROM futurecalls_calls WHERE id IN (SELECT value FROM json_each(?));

-- name: waiting_for
-- The prerequisites of pending calls (a JSON array) that wait.
SELECT call_id, prerequisite_id FROM futurecalls_call_dependencies
WHERE call_id IN (SELECT value FROM json_each(?))
ORDER BY call_id, prerequisite_id;

-- name: cluster_limits_of
-- The cluster-wide limits on the names of a JSON array ?1, and the one on all classes.
SELECT kind, name, tokens, per_us, set_at, set_by FROM futurecalls_cluster_limits
WHERE name IN (SELECT value FROM json_each(?1))
   OR (kind = 'concurrency' AND name = '*');

-- name: cluster_tokens_of
-- The tokens of one limit (?1 kind, ?2 name).
SELECT slot, call_id, owner, used_until FROM futurecalls_cluster_tokens
WHERE kind = ?1 AND name = ?2 ORDER BY slot;

-- name: worker_expiry
-- Until when worker ?1 is alive, if it is alive at ?2.
SELECT expires_at FROM futurecalls_workers WHERE id = ?1 AND expires_at > ?2;

-- name: take_token
-- A claim takes token (?1 kind, ?2 name, ?3 slot): held for call ?4 by worker ?5
-- (concurrency), or used until ?6 (rate).
UPDATE futurecalls_cluster_tokens SET call_id = ?4, owner = ?5, used_until = ?6
WHERE kind = ?1 AND name = ?2 AND slot = ?3;

-- name: set_cluster_limit
INSERT INTO futurecalls_cluster_limits (kind, name, tokens, per_us, set_at, set_by)
VALUES (?1, ?2, ?3, ?4, ?5, ?6)
ON CONFLICT (kind, name) DO UPDATE
SET tokens = excluded.tokens, per_us = excluded.per_us, set_at = excluded.set_at,
    set_by = excluded.set_by;

-- name: cluster_limit
SELECT kind, name, tokens, per_us, set_at, set_by FROM futurecalls_cluster_limits
WHERE kind = ?1 AND name = ?2;

-- name: add_token
INSERT OR IGNORE INTO futurecalls_cluster_tokens (kind, name, slot) VALUES (?1, ?2, ?3);

-- name: drop_tokens_beyond
-- Tokens beyond a lowered limit (?3 tokens) that no call holds.
DELETE FROM futurecalls_cluster_tokens
WHERE kind = ?1 AND name = ?2 AND slot >= ?3 AND call_id IS NULL;

-- name: remove_cluster_limit
DELETE FROM futurecalls_cluster_limits WHERE kind = ?1 AND name = ?2;

-- name: remove_cluster_tokens
DELETE FROM futurecalls_cluster_tokens WHERE kind = ?1 AND name = ?2;

-- name: cluster_limits
SELECT kind, name, tokens, per_us, set_at, set_by FROM futurecalls_cluster_limits
ORDER BY name, kind;

-- name: free_tokens
-- The concurrency tokens worker ?1 holds for the calls of a JSON array ?2 are free.
UPDATE futurecalls_cluster_tokens SET call_id = NULL, owner = NULL
WHERE owner = ?1 AND call_id IN (SELECT value FROM json_each(?2));

-- name: drop_free_tokens_beyond_limits
-- Once freed, tokens beyond their (lowered) limit go.
DELETE FROM futurecalls_cluster_tokens
WHERE call_id IS NULL AND slot >= coalesce((
    SELECT l.tokens FROM futurecalls_cluster_limits AS l
    WHERE l.kind = futurecalls_cluster_tokens.kind AND l.name = futurecalls_cluster_tokens.name
), 0);

-- name: pause
-- Pause a name (futurecalls_paused of migration 0008); a name paused already keeps
-- its time. One row changed: it was not paused.
INSERT INTO futurecalls_paused (name, paused_at) VALUES (?, ?) ON CONFLICT (name) DO NOTHING;

-- name: resume
-- One row deleted: it was paused.
DELETE FROM futurecalls_paused WHERE name = ?;

-- name: paused
SELECT name, paused_at FROM futurecalls_paused ORDER BY name;

-- name: paused_names
-- Read by every claim, in its transaction (usually no row: one page).
SELECT name FROM futurecalls_paused;

-- name: worker_register
-- Insert a worker's row, or replace the row with its id.
INSERT INTO futurecalls_workers
    (id, host, pid, started_at, heartbeat_at, expires_at, running, limits)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET
    host = excluded.host, pid = excluded.pid, started_at = excluded.started_at,
    heartbeat_at = excluded.heartbeat_at, expires_at = excluded.expires_at,
    running = excluded.running, limits = excluded.limits;

-- name: worker_heartbeat
-- Renew worker ?1's row at ?2 (now) until ?3, with ?4 running calls; a row that
-- expired by now is not revived (its worker registers again).
UPDATE futurecalls_workers SET heartbeat_at = ?2, expires_at = ?3, running = ?4
WHERE id = ?1 AND typeof(expires_at) = 'integer' AND expires_at > ?2;

-- name: workers_expire
-- Delete every row that expired by ?1. A row whose expiry is not a time (another
-- program wrote it) is dead too.
DELETE FROM futurecalls_workers
WHERE NOT (typeof(expires_at) = 'integer' AND expires_at > ?1);

-- name: worker_delete
DELETE FROM futurecalls_workers WHERE id = ?;

-- name: worker_free_tokens
-- A worker deregisters: the concurrency tokens it holds are free again.
UPDATE futurecalls_cluster_tokens SET call_id = NULL, owner = NULL WHERE owner = ?;

-- name: workers_live
-- The rows not expired by ?1, as WORKER_COLUMNS, by start then id.
SELECT id, host, pid, started_at, heartbeat_at, expires_at, running, limits
FROM futurecalls_workers
WHERE typeof(expires_at) = 'integer' AND expires_at > ?1
ORDER BY started_at, id;

-- name: cancel_leased
-- request_cancel: the leased rows of call ?1 (running, or their worker died) go, so
-- that they never run again. (What waited for them: stores/sqlite/_dependencies.py.)
DELETE FROM futurecalls_calls WHERE id = ? AND lease_owner IS NOT NULL
RETURNING id, waiting, dependents;

-- name: cancel_leased_identifier
DELETE FROM futurecalls_calls WHERE identifier = ? AND lease_owner IS NOT NULL
RETURNING id, waiting, dependents;

-- name: cancel_request_insert
INSERT INTO futurecalls_cancel_requests (call_id, identifier, requested_at, expires_at)
VALUES (?, ?, ?, ?)
RETURNING id;

-- name: cancel_requests_all
-- Every request, by id: the caller keeps the live ones and deletes the others (read
-- first, so that a worker that finds nothing to delete writes nothing).
SELECT id, call_id, identifier, requested_at, expires_at
FROM futurecalls_cancel_requests
ORDER BY id;

-- name: cancel_request_delete
DELETE FROM futurecalls_cancel_requests WHERE id = ?;

-- name: cancel_acks_orphaned
-- Acks of requests that are gone.
DELETE FROM futurecalls_cancel_acks
WHERE request_id NOT IN (SELECT id FROM futurecalls_cancel_requests);

-- name: cancel_ack
-- Only for a request that is still there; a second ack of a worker replaces its first.
INSERT INTO futurecalls_cancel_acks (request_id, worker_id, found)
SELECT ?1, ?2, ?3 WHERE EXISTS (SELECT 1 FROM futurecalls_cancel_requests WHERE id = ?1)
ON CONFLICT (request_id, worker_id) DO UPDATE SET found = excluded.found;

-- name: cancel_acks
SELECT worker_id, found FROM futurecalls_cancel_acks WHERE request_id = ? ORDER BY worker_id;
