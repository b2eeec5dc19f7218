-- Times are integer microseconds since the Unix epoch, UTC.
-- AUTOINCREMENT: ids are never reused, so a stale id can never cancel a newer call.
CREATE TABLE futurecalls_calls (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    payload TEXT NOT NULL,
    due_at INTEGER NOT NULL,
    identifier TEXT,
    scheduled_at INTEGER NOT NULL
);
CREATE INDEX futurecalls_calls_name_due ON futurecalls_calls (name, due_at, id);
CREATE INDEX futurecalls_calls_due ON futurecalls_calls (due_at, id);
CREATE INDEX futurecalls_calls_identifier ON futurecalls_calls (identifier)
    WHERE identifier IS NOT NULL;

CREATE TABLE futurecalls_dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    call_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    payload TEXT NOT NULL,
    due_at INTEGER NOT NULL,
    identifier TEXT,
    scheduled_at INTEGER NOT NULL,
    failed_at INTEGER NOT NULL,
    error TEXT NOT NULL,
    attempts INTEGER NOT NULL
);
CREATE INDEX futurecalls_dead_letters_failed ON futurecalls_dead_letters (failed_at, id);
