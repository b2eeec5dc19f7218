-- Priorities: among due calls with free slots, higher priority starts first, then
-- earlier due time, then lower id.
--
-- Existing rows get priority 0 (a constant default: no table rewrite). The CHECK
-- mirrors the library's bounds (trio_futurecalls._validate: MIN_PRIORITY = -1000,
-- MAX_PRIORITY = 1000).
--
-- The claim emulates a loose index scan on the new index: per name, the distinct
-- priorities in use from the highest down (one backward seek each), and for each an
-- index range scan of the rows due by now in (due_at, id) order. Future rows of a
-- higher priority are never read (a plain ORDER BY priority DESC, due_at, id with
-- due_at <= now would walk all of them: there is no skip scan). The (name, due_at,
-- id) index stays: the next due time of a name, the listing, dead_letter_due and
-- pending_counts use it.
ALTER TABLE {schema}.calls
    ADD COLUMN priority integer NOT NULL DEFAULT 0
        CONSTRAINT calls_priority_range CHECK (priority BETWEEN -1000 AND 1000);

CREATE INDEX calls_name_priority_due_id_idx ON {schema}.calls (name, priority, due_at, id);
