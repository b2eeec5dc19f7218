-- Priorities: among due calls with free slots, higher priority starts first, then
-- earlier due time, then lower id.
--
-- Existing rows get priority 0. The CHECK mirrors the library's bounds
-- (trio_futurecalls._validate: MIN_PRIORITY = -1000, MAX_PRIORITY = 1000); a row that
-- bypassed it (PRAGMA ignore_check_constraints) is dead-lettered when claimed.
--
-- The claim walks, per name, the distinct priorities of this index from the highest
-- down (one seek each), and in each the rows due by now in (due_at, id) order: future
-- rows of a higher priority are never read. The (name, due_at, id) index stays: the
-- next due time of a name and the listing need it.
ALTER TABLE futurecalls_calls ADD COLUMN priority INTEGER NOT NULL DEFAULT 0 CHECK (
    typeof(priority) = 'integer' AND priority BETWEEN -1000 AND 1000
);
CREATE INDEX futurecalls_calls_name_priority_due
    ON futurecalls_calls (name, priority, due_at, id);
