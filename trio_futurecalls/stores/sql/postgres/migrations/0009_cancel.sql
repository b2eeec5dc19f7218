-- Cancel running calls anywhere (trio_futurecalls._cancels).
--
-- cancel_requests: someone asked to stop a call (call_id) or every call with an
-- identifier (identifier) that runs somewhere. Pending and leased rows were deleted
-- in the transaction that stored the request; the request is for the calls no row
-- shows: at-most-once calls, whose claim deleted their row. Each executing worker
-- reads the requests it has not handled (woken by a NOTIFY sent with the insert),
-- cancels its matching running calls and acks. A request lives until expires_at;
-- whoever reads the requests later deletes the expired ones (and their acks).
--
-- cancel_acks: one row per worker that handled a request: how many running calls it
-- found (and cancelled) for it.
-- Bounds as in 0003: times from 0001-01-02 to 9999-12-30 UTC; identifiers as in calls.

CREATE TABLE {schema}.cancel_requests (
    id bigserial PRIMARY KEY,
    call_id bigint CONSTRAINT cancel_requests_call_id CHECK (call_id > 0),
    identifier text CONSTRAINT cancel_requests_identifier_length
        CHECK (char_length(identifier) BETWEEN 1 AND 255),
    requested_at timestamptz NOT NULL CONSTRAINT cancel_requests_requested_range
        CHECK (requested_at BETWEEN '0001-01-02 00:00:00+00' AND '9999-12-30 23:59:59.999999+00'),
    expires_at timestamptz NOT NULL CONSTRAINT cancel_requests_expires_range
        CHECK (expires_at BETWEEN '0001-01-02 00:00:00+00' AND '9999-12-30 23:59:59.999999+00'),
    CONSTRAINT cancel_requests_one_target CHECK ((call_id IS NULL) <> (identifier IS NULL))
);

CREATE TABLE {schema}.cancel_acks (
    request_id bigint NOT NULL REFERENCES {schema}.cancel_requests (id) ON DELETE CASCADE,
    worker_id text NOT NULL
        CONSTRAINT cancel_acks_worker_length CHECK (char_length(worker_id) BETWEEN 1 AND 1000),
    found integer NOT NULL CONSTRAINT cancel_acks_found CHECK (found >= 0),
    PRIMARY KEY (request_id, worker_id)
);
