-- Recurring schedules (trio_futurecalls._recurring).
--
-- A run of a schedule is an ordinary call that carries its schedule's key and the tick
-- it runs for; overlap="skip" looks for a row with the key (an index serves it). A
-- schedule's next tick is stored in the same transaction that stores its runs
-- (fire_recurring, which locks due schedules FOR UPDATE SKIP LOCKED), so a tick is
-- handed out once across every worker, with no leader.
-- Bounds as in 0003: times from 0001-01-02 to 9999-12-30 UTC; keys of 1 to 200
-- characters; names, payloads and identifiers as in calls; every from 1 ms to 100
-- years (trio_futurecalls._validate).

ALTER TABLE {schema}.calls
    ADD COLUMN recurring_key text
        CONSTRAINT calls_recurring_key_length CHECK (char_length(recurring_key) BETWEEN 1 AND 200),
    ADD COLUMN tick_at timestamptz
        CONSTRAINT calls_tick_at_range
        CHECK (tick_at BETWEEN '0001-01-02 00:00:00+00' AND '9999-12-30 23:59:59.999999+00');

CREATE INDEX calls_recurring_key_idx ON {schema}.calls (recurring_key)
    WHERE recurring_key IS NOT NULL;

CREATE TABLE {schema}.recurring (
    key text PRIMARY KEY
        CONSTRAINT recurring_key_length CHECK (char_length(key) BETWEEN 1 AND 200),
    name text NOT NULL
        CONSTRAINT recurring_name_length CHECK (char_length(name) BETWEEN 1 AND 200),
    payload text NOT NULL
        CONSTRAINT recurring_payload_size CHECK (octet_length(payload) <= 1048576),
    identifier text
        CONSTRAINT recurring_identifier_length CHECK (char_length(identifier) BETWEEN 1 AND 255),
    cron text CONSTRAINT recurring_cron_length CHECK (char_length(cron) BETWEEN 1 AND 200),
    every double precision
        CONSTRAINT recurring_every_range CHECK (every BETWEEN 0.001 AND 3162240000),
    timezone text NOT NULL
        CONSTRAINT recurring_timezone_length CHECK (char_length(timezone) BETWEEN 1 AND 100),
    start_at timestamptz CONSTRAINT recurring_start_range
        CHECK (start_at BETWEEN '0001-01-02 00:00:00+00' AND '9999-12-30 23:59:59.999999+00'),
    end_at timestamptz CONSTRAINT recurring_end_range
        CHECK (end_at BETWEEN '0001-01-02 00:00:00+00' AND '9999-12-30 23:59:59.999999+00'),
    misfire text NOT NULL CONSTRAINT recurring_misfire CHECK (misfire IN ('once', 'skip', 'all')),
    overlap text NOT NULL CONSTRAINT recurring_overlap CHECK (overlap IN ('allow', 'skip')),
    anchor timestamptz NOT NULL CONSTRAINT recurring_anchor_range
        CHECK (anchor BETWEEN '0001-01-02 00:00:00+00' AND '9999-12-30 23:59:59.999999+00'),
    next_tick timestamptz CONSTRAINT recurring_next_tick_range
        CHECK (next_tick BETWEEN '0001-01-02 00:00:00+00' AND '9999-12-30 23:59:59.999999+00'),
    last_tick timestamptz CONSTRAINT recurring_last_tick_range
        CHECK (last_tick BETWEEN '0001-01-02 00:00:00+00' AND '9999-12-30 23:59:59.999999+00'),
    last_call_id bigint CONSTRAINT recurring_last_call_id CHECK (last_call_id >= 1),
    runs bigint NOT NULL DEFAULT 0 CONSTRAINT recurring_runs CHECK (runs >= 0),
    skipped_overlap bigint NOT NULL DEFAULT 0
        CONSTRAINT recurring_skipped_overlap CHECK (skipped_overlap >= 0),
    skipped_misfire bigint NOT NULL DEFAULT 0
        CONSTRAINT recurring_skipped_misfire CHECK (skipped_misfire >= 0),
    created_at timestamptz NOT NULL CONSTRAINT recurring_created_range
        CHECK (created_at BETWEEN '0001-01-02 00:00:00+00' AND '9999-12-30 23:59:59.999999+00'),
    updated_at timestamptz NOT NULL CONSTRAINT recurring_updated_range
        CHECK (updated_at BETWEEN '0001-01-02 00:00:00+00' AND '9999-12-30 23:59:59.999999+00'),
    CONSTRAINT recurring_cron_or_every CHECK ((cron IS NULL) <> (every IS NULL))
);

-- fire_recurring: the due schedules, earliest first; and the earliest next tick.
CREATE INDEX recurring_next_tick_idx ON {schema}.recurring (next_tick)
    WHERE next_tick IS NOT NULL;
