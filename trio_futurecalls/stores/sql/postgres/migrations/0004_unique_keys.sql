-- Unique keys: at most one pending call per (name, unique_key).
--
-- unique_key is NULL for calls without a key, and for every call a claim took (the
-- claim sets it to NULL, or deletes the row: a started, retried or handed-back call no
-- longer holds its key). Its CHECK mirrors the library's limit
-- (trio_futurecalls._validate.MAX_UNIQUE_KEY_LENGTH = 255 characters), like the
-- identifier's; NUL cannot be in PostgreSQL text at all. The partial unique index is
-- what makes "schedule if absent" hold across processes: the schedule statements use
-- it as their ON CONFLICT target.
ALTER TABLE {schema}.calls
    ADD COLUMN unique_key text
        CONSTRAINT calls_unique_key_length CHECK (char_length(unique_key) BETWEEN 1 AND 255);

CREATE UNIQUE INDEX calls_name_unique_key_idx ON {schema}.calls (name, unique_key)
    WHERE unique_key IS NOT NULL;
