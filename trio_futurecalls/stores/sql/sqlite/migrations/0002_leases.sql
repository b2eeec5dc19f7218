-- At-least-once delivery and retries.
-- attempts: attempts started so far. lease_owner: the worker holding the row while
-- its call runs (NULL: pending); while leased, due_at is the lease expiry, so an
-- expired lease is simply a due row again.
ALTER TABLE futurecalls_calls ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE futurecalls_calls ADD COLUMN lease_owner TEXT;
