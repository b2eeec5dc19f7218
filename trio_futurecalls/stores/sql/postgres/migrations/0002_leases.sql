-- At-least-once delivery and retries.
-- attempts: attempts started so far. lease_owner: the worker holding the row while its
-- call runs (NULL: pending); while leased, due_at is the lease expiry, so an expired
-- lease is simply a due row again and needs no separate recovery step.
ALTER TABLE {schema}.calls
    ADD COLUMN attempts integer NOT NULL DEFAULT 0
        CONSTRAINT calls_attempts CHECK (attempts >= 0),
    ADD COLUMN lease_owner text;

-- A dead letter keeps the attempts its call had made (0 when it never started).
ALTER TABLE {schema}.dead_letters
    DROP CONSTRAINT dead_letters_attempts,
    ADD CONSTRAINT dead_letters_attempts CHECK (attempts >= 0);
