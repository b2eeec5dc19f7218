-- Only values every worker can read and claim (trio_futurecalls.stores.postgres._values).
-- PostgreSQL holds times Python's datetime cannot ('infinity', '-infinity', years
-- before 1 or after 9999: asyncpg fails to convert them, so a claim that returned one
-- had deleted rows it could not hand over), and attempts that "attempts + 1" overflows.
-- Bounds, kept in step with _values.py: times from 0001-01-02 to 9999-12-30 UTC (a day
-- of margin on each side of what datetime holds), attempts from 0 to 1,000,000.
--
-- First, rows written by another tool before these CHECKs existed: a call holding such
-- a value moves to dead letters, and a dead letter holding one keeps it only as text;
-- either way the value is clamped into the bounds so that the dead letter is readable,
-- and its error says what was wrong, with the original values. Then the CHECKs.

-- The original values go into the error text: print them the same way everywhere.
SET LOCAL TimeZone = 'UTC';
SET LOCAL DateStyle = 'ISO, YMD';

-- The bounds, once, for this script only: functions in the store's schema (where the
-- migrating role may create objects; temporary ones need a privilege it may lack),
-- dropped at its end, in the same transaction.
CREATE FUNCTION {schema}.m0003_clamp(t timestamptz) RETURNS timestamptz
    LANGUAGE sql IMMUTABLE
    AS $$ SELECT least(greatest(t, '0001-01-02 00:00:00+00'), '9999-12-30 23:59:59.999999+00') $$;
CREATE FUNCTION {schema}.m0003_clamp(n integer) RETURNS integer
    LANGUAGE sql IMMUTABLE
    AS $$ SELECT least(greatest(n, 0), 1000000) $$;
-- What is wrong with a row's values ('' when nothing): "due_at was -infinity; ...".
CREATE FUNCTION {schema}.m0003_unreadable(
    due_at timestamptz, scheduled_at timestamptz, failed_at timestamptz, attempts integer
) RETURNS text LANGUAGE sql STABLE AS $$
    SELECT concat_ws('; ',
        CASE WHEN due_at <> {schema}.m0003_clamp(due_at) THEN 'due_at was ' || due_at END,
        CASE WHEN scheduled_at <> {schema}.m0003_clamp(scheduled_at)
            THEN 'scheduled_at was ' || scheduled_at END,
        CASE WHEN failed_at <> {schema}.m0003_clamp(failed_at)
            THEN 'failed_at was ' || failed_at END,
        CASE WHEN attempts <> {schema}.m0003_clamp(attempts)
            THEN 'attempts was ' || attempts END)
$$;

UPDATE {schema}.dead_letters SET
    error = error || E'\n' || 'migration 0003: values outside what the library can read '
        || '(times 0001-01-02 to 9999-12-30 UTC, attempts 0 to 1000000) were clamped: '
        || {schema}.m0003_unreadable(due_at, scheduled_at, failed_at, attempts),
    due_at = {schema}.m0003_clamp(due_at),
    scheduled_at = {schema}.m0003_clamp(scheduled_at),
    failed_at = {schema}.m0003_clamp(failed_at),
    attempts = {schema}.m0003_clamp(attempts)
WHERE {schema}.m0003_unreadable(due_at, scheduled_at, failed_at, attempts) <> '';

WITH moved AS (
    DELETE FROM {schema}.calls
    WHERE {schema}.m0003_unreadable(due_at, scheduled_at, NULL, attempts) <> ''
    RETURNING *
)
INSERT INTO {schema}.dead_letters
    (call_id, name, payload, due_at, identifier, scheduled_at, failed_at, error, attempts)
SELECT id, name, payload, {schema}.m0003_clamp(due_at), identifier,
    {schema}.m0003_clamp(scheduled_at), now(),
    'migration 0003: moved to dead letters: no worker could read or claim it (times '
        || '0001-01-02 to 9999-12-30 UTC, attempts 0 to 1000000 are readable; the values '
        || 'kept here were clamped into them): '
        || {schema}.m0003_unreadable(due_at, scheduled_at, NULL, attempts)
        || CASE WHEN lease_owner IS NOT NULL THEN '; it was leased by ' || lease_owner ELSE '' END,
    {schema}.m0003_clamp(attempts)
FROM moved
ORDER BY id;

DROP FUNCTION {schema}.m0003_unreadable(timestamptz, timestamptz, timestamptz, integer);
DROP FUNCTION {schema}.m0003_clamp(timestamptz);
DROP FUNCTION {schema}.m0003_clamp(integer);

ALTER TABLE {schema}.calls
    ADD CONSTRAINT calls_due_at_range
        CHECK (due_at BETWEEN '0001-01-02 00:00:00+00' AND '9999-12-30 23:59:59.999999+00'),
    ADD CONSTRAINT calls_scheduled_at_range
        CHECK (scheduled_at BETWEEN '0001-01-02 00:00:00+00' AND '9999-12-30 23:59:59.999999+00'),
    DROP CONSTRAINT IF EXISTS calls_attempts,
    ADD CONSTRAINT calls_attempts CHECK (attempts BETWEEN 0 AND 1000000);

ALTER TABLE {schema}.dead_letters
    ADD CONSTRAINT dead_letters_due_at_range
        CHECK (due_at BETWEEN '0001-01-02 00:00:00+00' AND '9999-12-30 23:59:59.999999+00'),
    ADD CONSTRAINT dead_letters_scheduled_at_range
        CHECK (scheduled_at BETWEEN '0001-01-02 00:00:00+00' AND '9999-12-30 23:59:59.999999+00'),
    ADD CONSTRAINT dead_letters_failed_at_range
        CHECK (failed_at BETWEEN '0001-01-02 00:00:00+00' AND '9999-12-30 23:59:59.999999+00'),
    DROP CONSTRAINT IF EXISTS dead_letters_attempts,
    ADD CONSTRAINT dead_letters_attempts CHECK (attempts BETWEEN 0 AND 1000000);
