-- Cancel running calls anywhere (trio_futurecalls._cancels). As in the PostgreSQL
-- store's 0009 (read its comment); workers in other processes see a new request when
-- their data_version watcher notices the commit (within recheck_interval). Times are
-- integer microseconds since the epoch, bounded as in 0003.

CREATE TABLE futurecalls_cancel_requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    call_id INTEGER CHECK (call_id IS NULL OR (typeof(call_id) = 'integer' AND call_id > 0)),
    identifier TEXT CHECK (
        identifier IS NULL OR (typeof(identifier) = 'text' AND length(identifier) BETWEEN 1 AND 255)
    ),
    requested_at INTEGER NOT NULL CHECK (
        typeof(requested_at) = 'integer'
        AND requested_at BETWEEN -62135510400000000 AND 253402214399999999
    ),
    expires_at INTEGER NOT NULL CHECK (
        typeof(expires_at) = 'integer'
        AND expires_at BETWEEN -62135510400000000 AND 253402214399999999
    ),
    CHECK ((call_id IS NULL) <> (identifier IS NULL))
);

CREATE TABLE futurecalls_cancel_acks (
    request_id INTEGER NOT NULL,
    worker_id TEXT NOT NULL CHECK (typeof(worker_id) = 'text' AND length(worker_id) BETWEEN 1 AND 1000),
    found INTEGER NOT NULL CHECK (typeof(found) = 'integer' AND found >= 0),
    PRIMARY KEY (request_id, worker_id)
);
