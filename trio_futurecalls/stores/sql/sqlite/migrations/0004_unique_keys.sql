-- Unique keys: at most one pending call per (name, unique_key).
--
-- unique_key is NULL for calls without a key, and for every call a claim took (the
-- claim sets it to NULL: a started, retried or handed-back call no longer holds its
-- key). Its CHECK mirrors the library's limit (trio_futurecalls._validate:
-- MAX_UNIQUE_KEY_LENGTH = 255 characters of UTF-8, no NUL), like the identifier's.
-- The partial unique index is what makes "schedule if absent" hold across processes:
-- the database refuses a second pending row with the same name and key.
ALTER TABLE futurecalls_calls ADD COLUMN unique_key TEXT CHECK (
    unique_key IS NULL OR (
        typeof(unique_key) = 'text' AND length(unique_key) BETWEEN 1 AND 255
        AND instr(unique_key, char(0)) = 0
    )
);
CREATE UNIQUE INDEX futurecalls_calls_unique_key ON futurecalls_calls (name, unique_key)
    WHERE unique_key IS NOT NULL;
