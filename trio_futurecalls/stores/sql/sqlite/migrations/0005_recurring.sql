-- Recurring schedules (trio_futurecalls._recurring).
--
-- A run of a schedule is an ordinary call that carries its schedule's key and the
-- tick it runs for; overlap="skip" looks for a row with the key. Each schedule's next
-- tick is stored in the same transaction that stores its runs (fire_recurring), so a
-- tick is handed out once across every process using this file.
-- Times are integer microseconds since 1970-01-01 UTC, within the library's range
-- (see 0003); keys are 1 to 200 characters without NUL.

ALTER TABLE futurecalls_calls ADD COLUMN recurring_key TEXT CHECK (
    recurring_key IS NULL OR (
        typeof(recurring_key) = 'text' AND length(recurring_key) BETWEEN 1 AND 200
        AND instr(recurring_key, char(0)) = 0
    )
);
ALTER TABLE futurecalls_calls ADD COLUMN tick_at INTEGER CHECK (
    tick_at IS NULL OR (
        typeof(tick_at) = 'integer'
        AND tick_at BETWEEN -62135510400000000 AND 253402214399999999
    )
);
CREATE INDEX futurecalls_calls_recurring ON futurecalls_calls (recurring_key)
    WHERE recurring_key IS NOT NULL;

CREATE TABLE futurecalls_recurring (
    key TEXT PRIMARY KEY NOT NULL CHECK (
        typeof(key) = 'text' AND length(key) BETWEEN 1 AND 200 AND instr(key, char(0)) = 0
    ),
    name TEXT NOT NULL CHECK (
        typeof(name) = 'text' AND length(name) BETWEEN 1 AND 200
        AND instr(name, char(0)) = 0
        AND name GLOB '[A-Za-z_]*' AND name NOT GLOB '*[^A-Za-z0-9_.:-]*'
    ),
    payload TEXT NOT NULL CHECK (
        typeof(payload) = 'text' AND length(CAST(payload AS BLOB)) <= 1048576
        AND instr(payload, char(0)) = 0
    ),
    identifier TEXT CHECK (
        identifier IS NULL OR (
            typeof(identifier) = 'text' AND length(identifier) BETWEEN 1 AND 255
            AND instr(identifier, char(0)) = 0
        )
    ),
    cron TEXT CHECK (
        cron IS NULL OR (typeof(cron) = 'text' AND length(cron) BETWEEN 1 AND 200)
    ),
    every REAL CHECK (
        every IS NULL OR (typeof(every) = 'real' AND every BETWEEN 0.001 AND 3162240000.0)
    ),
    timezone TEXT NOT NULL CHECK (
        typeof(timezone) = 'text' AND length(timezone) BETWEEN 1 AND 100
    ),
    start_at INTEGER CHECK (
        start_at IS NULL OR (
            typeof(start_at) = 'integer'
            AND start_at BETWEEN -62135510400000000 AND 253402214399999999
        )
    ),
    end_at INTEGER CHECK (
        end_at IS NULL OR (
            typeof(end_at) = 'integer'
            AND end_at BETWEEN -62135510400000000 AND 253402214399999999
        )
    ),
    misfire TEXT NOT NULL CHECK (misfire IN ('once', 'skip', 'all')),
    overlap TEXT NOT NULL CHECK (overlap IN ('allow', 'skip')),
    anchor INTEGER NOT NULL CHECK (
        typeof(anchor) = 'integer'
        AND anchor BETWEEN -62135510400000000 AND 253402214399999999
    ),
    next_tick INTEGER CHECK (
        next_tick IS NULL OR (
            typeof(next_tick) = 'integer'
            AND next_tick BETWEEN -62135510400000000 AND 253402214399999999
        )
    ),
    last_tick INTEGER CHECK (
        last_tick IS NULL OR (
            typeof(last_tick) = 'integer'
            AND last_tick BETWEEN -62135510400000000 AND 253402214399999999
        )
    ),
    last_call_id INTEGER CHECK (
        last_call_id IS NULL OR (typeof(last_call_id) = 'integer' AND last_call_id >= 1)
    ),
    runs INTEGER NOT NULL DEFAULT 0 CHECK (typeof(runs) = 'integer' AND runs >= 0),
    skipped_overlap INTEGER NOT NULL DEFAULT 0 CHECK (
        typeof(skipped_overlap) = 'integer' AND skipped_overlap >= 0
    ),
    skipped_misfire INTEGER NOT NULL DEFAULT 0 CHECK (
        typeof(skipped_misfire) = 'integer' AND skipped_misfire >= 0
    ),
    created_at INTEGER NOT NULL CHECK (
        typeof(created_at) = 'integer'
        AND created_at BETWEEN -62135510400000000 AND 253402214399999999
    ),
    updated_at INTEGER NOT NULL CHECK (
        typeof(updated_at) = 'integer'
        AND updated_at BETWEEN -62135510400000000 AND 253402214399999999
    ),
    CHECK ((cron IS NULL) <> (every IS NULL))
);

-- fire_recurring: the due schedules, earliest first; and the earliest next tick.
CREATE INDEX futurecalls_recurring_next ON futurecalls_recurring (next_tick)
    WHERE next_tick IS NOT NULL;
