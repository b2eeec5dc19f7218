-- name: insert_call
INSERT INTO futurecalls_calls (name, payload, due_at, identifier, scheduled_at)
VALUES (?, ?, ?, ?, ?)
RETURNING id;

-- name: cancel
DELETE FROM futurecalls_calls WHERE id = ?;

-- name: cancel_identifier
DELETE FROM futurecalls_calls WHERE identifier = ?;

-- name: pending
SELECT id, name, payload, due_at, identifier, scheduled_at
FROM futurecalls_calls
WHERE (:name IS NULL OR name = :name)
  AND (:identifier IS NULL OR identifier = :identifier)
  AND (:due_after IS NULL OR due_at >= :due_after)
  AND (:due_before IS NULL OR due_at < :due_before)
ORDER BY due_at, id
LIMIT coalesce(:limit, -1);

-- name: pending_names
-- The parameter is NULL (all pending calls) or a due_at bound (inclusive).
SELECT name, count(*) FROM futurecalls_calls
WHERE ?1 IS NULL OR due_at <= ?1
GROUP BY name;

-- name: next_due_of_name
SELECT min(due_at) FROM futurecalls_calls WHERE name = ?;

-- name: claim_candidates
-- The earliest due rows of one name, up to that name's free slots.
SELECT id, due_at FROM futurecalls_calls
WHERE name = ? AND due_at <= ?
ORDER BY due_at, id
LIMIT ?;

-- name: delete_returning
-- The parameter is a JSON array of ids.
DELETE FROM futurecalls_calls WHERE id IN (SELECT value FROM json_each(?))
RETURNING id, name, payload, due_at, identifier, scheduled_at;

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

-- name: purge_dead_letter
DELETE FROM futurecalls_dead_letters WHERE id = ?;

-- name: purge_all_dead_letters
DELETE FROM futurecalls_dead_letters;
