-- Dependencies between calls: a call may wait for others to succeed (after=[ids]).
--
-- calls.waiting counts a row's unmet prerequisites: a row with waiting > 0 is pending
-- but never claimed. calls.dependents says that other calls wait for this one (its end
-- must be told). call_dependencies holds one edge per unmet prerequisite; an edge goes
-- when its prerequisite succeeds (the dependent's waiting goes down with it), or with
-- the dependent when a prerequisite fails for good (the dependent then becomes a dead
-- letter, and so do the calls waiting for it). No foreign keys: an at-most-once
-- prerequisite's row is deleted when it starts, while its edges stay until it ends.
-- started_prerequisites records such a call (claimed, row deleted, end not told yet),
-- so that calls can still be made to wait for it while it runs: under the claim's
-- lease owner until expires_at, renewed by that owner while the call runs; a record
-- left to expire means its worker stopped, and the calls waiting for it end
-- (Store.end_abandoned_prerequisites). Without a lease both are NULL: no expiry.
--
-- New columns have constant defaults (no table rewrite). The claim index becomes
-- partial (WHERE waiting = 0): claims never read waiting rows, however many are due.
ALTER TABLE {schema}.calls
    ADD COLUMN waiting integer NOT NULL DEFAULT 0
        CONSTRAINT calls_waiting_range CHECK (waiting BETWEEN 0 AND 1000),
    ADD COLUMN dependents boolean NOT NULL DEFAULT false;

CREATE TABLE {schema}.call_dependencies (
    prerequisite_id bigint NOT NULL,
    call_id bigint NOT NULL,
    PRIMARY KEY (prerequisite_id, call_id)
);
CREATE INDEX call_dependencies_call_id_idx ON {schema}.call_dependencies (call_id);

CREATE TABLE {schema}.started_prerequisites (
    call_id bigint PRIMARY KEY,
    name text NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    owner text CONSTRAINT started_prerequisites_owner_length
        CHECK (char_length(owner) BETWEEN 1 AND 1000),
    expires_at timestamptz CONSTRAINT started_prerequisites_expires_range
        CHECK (expires_at BETWEEN '0001-01-02 00:00:00+00' AND '9999-12-30 23:59:59.999999+00')
);

DROP INDEX {schema}.calls_name_priority_due_id_idx;
CREATE INDEX calls_ready_name_priority_due_id_idx ON {schema}.calls (name, priority, due_at, id)
    WHERE waiting = 0;
