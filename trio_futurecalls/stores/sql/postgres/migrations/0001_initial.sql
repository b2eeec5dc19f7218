-- {schema} is replaced by the validated, quoted schema name before this runs.
-- Times are timestamptz (microsecond precision, UTC on the Python side).
-- Ids are identity columns: never reused, so a stale id can never cancel a newer call.
-- The CHECKs mirror the library's limits (trio_futurecalls._validate.MAX_NAME_LENGTH,
-- MAX_IDENTIFIER_LENGTH, trio_futurecalls._payload.MAX_PAYLOAD_BYTES = 1 MiB); they are
-- a backstop: the library rejects such input before it reaches the database.
CREATE TABLE {schema}.calls (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL
        CONSTRAINT calls_name_length CHECK (char_length(name) BETWEEN 1 AND 200),
    payload text NOT NULL
        CONSTRAINT calls_payload_size CHECK (octet_length(payload) <= 1048576),
    due_at timestamptz NOT NULL,
    identifier text
        CONSTRAINT calls_identifier_length CHECK (char_length(identifier) BETWEEN 1 AND 255),
    scheduled_at timestamptz NOT NULL
);

-- claim: one index range scan per name, earliest due first, ties by id.
CREATE INDEX calls_name_due_id_idx ON {schema}.calls (name, due_at, id);
-- pending() without a name filter.
CREATE INDEX calls_due_id_idx ON {schema}.calls (due_at, id);
-- cancel_identifier.
CREATE INDEX calls_identifier_idx ON {schema}.calls (identifier) WHERE identifier IS NOT NULL;

CREATE TABLE {schema}.dead_letters (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    call_id bigint NOT NULL,
    name text NOT NULL,
    payload text NOT NULL,
    due_at timestamptz NOT NULL,
    identifier text,
    scheduled_at timestamptz NOT NULL,
    failed_at timestamptz NOT NULL,
    error text NOT NULL,
    attempts integer NOT NULL CONSTRAINT dead_letters_attempts CHECK (attempts >= 1)
);

CREATE INDEX dead_letters_failed_id_idx ON {schema}.dead_letters (failed_at, id);
