-- Constraints on every column, so that a row no program may write cannot get in.
--
-- The store is shared with other programs: before this, a row with a due time in
-- text, a time no Python datetime can hold, or a blob for a name could crash the
-- scheduler. Both tables are rebuilt with CHECKs that mirror the library's limits
-- (trio_futurecalls._validate: names of 1 to 200 characters from the letters,
-- digits and _ . : - starting with a letter or _; identifiers of 1 to 255
-- characters; payloads of at most MAX_PAYLOAD_BYTES = 1 MiB of UTF-8; no NUL in
-- text; times as integer microseconds since 1970-01-01 UTC between EARLIEST_TIME
-- 0001-01-02 and LATEST_TIME 9999-12-30 23:59:59.999999, Python's datetime range less
-- a day at each end; attempts from 0 to MAX_ATTEMPTS = 1,000,000; ids from 1). The
-- two tables share their columns' CHECKs: SQLite has no domains to name them once.
--
-- The old tables are renamed *_v2 and every row that meets the CHECKs is copied
-- (INSERT OR IGNORE skips the others). The rows left behind are not dropped: the data
-- step of this migration (stores/sqlite/_quarantine.py), run right after this script
-- in the same transaction, reads them with the store's own row checks, makes each
-- call a dead letter whose error says what was wrong and keeps the original values,
-- fixes each broken dead letter in place with a note, and drops the *_v2 tables.
-- Ids are never reused: each table's AUTOINCREMENT sequence carries over.

DROP INDEX futurecalls_calls_name_due;
DROP INDEX futurecalls_calls_due;
DROP INDEX futurecalls_calls_identifier;
DROP INDEX futurecalls_dead_letters_failed;
ALTER TABLE futurecalls_calls RENAME TO futurecalls_calls_v2;
ALTER TABLE futurecalls_dead_letters RENAME TO futurecalls_dead_letters_v2;

CREATE TABLE futurecalls_calls (
    id INTEGER PRIMARY KEY AUTOINCREMENT CHECK (id >= 1),
    name TEXT NOT NULL CHECK (
        typeof(name) = 'text' AND length(name) BETWEEN 1 AND 200
        AND instr(name, char(0)) = 0
        AND name GLOB '[A-Za-z_]*' AND name NOT GLOB '*[^A-Za-z0-9_.:-]*'
    ),
    payload TEXT NOT NULL CHECK (
        typeof(payload) = 'text' AND length(CAST(payload AS BLOB)) <= 1048576
        AND instr(payload, char(0)) = 0
    ),
    due_at INTEGER NOT NULL CHECK (
        typeof(due_at) = 'integer'
        AND due_at BETWEEN -62135510400000000 AND 253402214399999999
    ),
    identifier TEXT CHECK (
        identifier IS NULL OR (
            typeof(identifier) = 'text' AND length(identifier) BETWEEN 1 AND 255
            AND instr(identifier, char(0)) = 0
        )
    ),
    scheduled_at INTEGER NOT NULL CHECK (
        typeof(scheduled_at) = 'integer'
        AND scheduled_at BETWEEN -62135510400000000 AND 253402214399999999
    ),
    attempts INTEGER NOT NULL DEFAULT 0 CHECK (
        typeof(attempts) = 'integer' AND attempts BETWEEN 0 AND 1000000
    ),
    lease_owner TEXT CHECK (
        lease_owner IS NULL OR (
            typeof(lease_owner) = 'text' AND length(lease_owner) BETWEEN 1 AND 1000
            AND instr(lease_owner, char(0)) = 0
        )
    )
);
CREATE INDEX futurecalls_calls_name_due ON futurecalls_calls (name, due_at, id);
CREATE INDEX futurecalls_calls_due ON futurecalls_calls (due_at, id);
CREATE INDEX futurecalls_calls_identifier ON futurecalls_calls (identifier)
    WHERE identifier IS NOT NULL;

CREATE TABLE futurecalls_dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT CHECK (id >= 1),
    call_id INTEGER NOT NULL CHECK (typeof(call_id) = 'integer'),
    name TEXT NOT NULL CHECK (
        typeof(name) = 'text' AND length(name) BETWEEN 1 AND 200
        AND instr(name, char(0)) = 0
        AND name GLOB '[A-Za-z_]*' AND name NOT GLOB '*[^A-Za-z0-9_.:-]*'
    ),
    payload TEXT NOT NULL CHECK (
        typeof(payload) = 'text' AND length(CAST(payload AS BLOB)) <= 1048576
        AND instr(payload, char(0)) = 0
    ),
    due_at INTEGER NOT NULL CHECK (
        typeof(due_at) = 'integer'
        AND due_at BETWEEN -62135510400000000 AND 253402214399999999
    ),
    identifier TEXT CHECK (
        identifier IS NULL OR (
            typeof(identifier) = 'text' AND length(identifier) BETWEEN 1 AND 255
            AND instr(identifier, char(0)) = 0
        )
    ),
    scheduled_at INTEGER NOT NULL CHECK (
        typeof(scheduled_at) = 'integer'
        AND scheduled_at BETWEEN -62135510400000000 AND 253402214399999999
    ),
    failed_at INTEGER NOT NULL CHECK (
        typeof(failed_at) = 'integer'
        AND failed_at BETWEEN -62135510400000000 AND 253402214399999999
    ),
    error TEXT NOT NULL CHECK (typeof(error) = 'text'),
    attempts INTEGER NOT NULL CHECK (
        typeof(attempts) = 'integer' AND attempts BETWEEN 0 AND 1000000
    )
);
CREATE INDEX futurecalls_dead_letters_failed ON futurecalls_dead_letters (failed_at, id);

INSERT OR IGNORE INTO futurecalls_calls
    (id, name, payload, due_at, identifier, scheduled_at, attempts, lease_owner)
SELECT id, name, payload, due_at, identifier, scheduled_at, attempts, lease_owner
FROM futurecalls_calls_v2
ORDER BY id;

INSERT OR IGNORE INTO futurecalls_dead_letters
    (id, call_id, name, payload, due_at, identifier, scheduled_at, failed_at, error, attempts)
SELECT id, call_id, name, payload, due_at, identifier, scheduled_at, failed_at, error, attempts
FROM futurecalls_dead_letters_v2
ORDER BY id;

-- Ids are never reused: each sequence goes on from the old table's, or past its
-- highest id (the rows left behind keep theirs, or get new ones past it).
DELETE FROM sqlite_sequence WHERE name IN ('futurecalls_calls', 'futurecalls_dead_letters');
INSERT INTO sqlite_sequence (name, seq)
SELECT 'futurecalls_calls', max(
    coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'futurecalls_calls_v2'), 0),
    coalesce((SELECT max(id) FROM futurecalls_calls_v2), 0)
);
INSERT INTO sqlite_sequence (name, seq)
SELECT 'futurecalls_dead_letters', max(
    coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'futurecalls_dead_letters_v2'), 0),
    coalesce((SELECT max(id) FROM futurecalls_dead_letters_v2), 0)
);
