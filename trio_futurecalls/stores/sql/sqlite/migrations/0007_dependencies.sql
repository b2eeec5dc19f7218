-- Dependencies between calls (stores/_dependencies.py): a call scheduled with after=
-- waits until each prerequisite succeeded.
--
-- waiting: how many prerequisites a call still waits for (its edges below); a call is
-- claimable only at 0. dependents: 1 when calls wait (or waited) for this one, so
-- that a claim, a completion or a cancel of a call without dependents costs nothing
-- more. Existing rows get 0 for both.
ALTER TABLE futurecalls_calls ADD COLUMN waiting INTEGER NOT NULL DEFAULT 0 CHECK (
    typeof(waiting) = 'integer' AND waiting >= 0
);
ALTER TABLE futurecalls_calls ADD COLUMN dependents INTEGER NOT NULL DEFAULT 0 CHECK (
    typeof(dependents) = 'integer' AND dependents IN (0, 1)
);

-- One edge per unmet prerequisite: call_id waits for prerequisite_id. The prerequisite
-- is a row of futurecalls_calls (pending or leased), or an at-most-once call that runs
-- (futurecalls_started_prerequisites). Success deletes its edges (a dependent with
-- none left is due); any other end moves its dependents, and theirs, to dead letters.
-- The primary key finds a prerequisite's dependents; the index, a call's prerequisites.
CREATE TABLE futurecalls_call_dependencies (
    prerequisite_id INTEGER NOT NULL CHECK (
        typeof(prerequisite_id) = 'integer' AND prerequisite_id >= 1
    ),
    call_id INTEGER NOT NULL CHECK (typeof(call_id) = 'integer' AND call_id >= 1),
    PRIMARY KEY (prerequisite_id, call_id),
    CHECK (prerequisite_id <> call_id)
) WITHOUT ROWID;
CREATE INDEX futurecalls_call_dependencies_call
    ON futurecalls_call_dependencies (call_id);

-- An at-most-once claim deletes its row; a claimed call with dependents is recorded
-- here instead until its end is told (Store.prerequisite_ended), a dead letter or a
-- retry (put_back) ends it, so that calls can still be made to wait for it while it
-- runs. Name and start time are for whoever looks (times as in 0003). A claim with a
-- lease records the call under the lease's owner until expires_at, and the owner
-- renews it while the call runs; a record left to expire means its worker stopped,
-- and the calls waiting for it end (Store.end_abandoned_prerequisites). Without a
-- lease, owner and expires_at are NULL: the record never expires.
CREATE TABLE futurecalls_started_prerequisites (
    call_id INTEGER PRIMARY KEY CHECK (call_id >= 1),
    name TEXT NOT NULL CHECK (
        typeof(name) = 'text' AND length(name) BETWEEN 1 AND 200
        AND instr(name, char(0)) = 0
        AND name GLOB '[A-Za-z_]*' AND name NOT GLOB '*[^A-Za-z0-9_.:-]*'
    ),
    started_at INTEGER NOT NULL CHECK (
        typeof(started_at) = 'integer'
        AND started_at BETWEEN -62135510400000000 AND 253402214399999999
    ),
    owner TEXT CHECK (
        owner IS NULL OR (typeof(owner) = 'text' AND length(owner) BETWEEN 1 AND 1000)
    ),
    expires_at INTEGER CHECK (
        expires_at IS NULL OR (
            typeof(expires_at) = 'integer'
            AND expires_at BETWEEN -62135510400000000 AND 253402214399999999
        )
    )
);

-- The claim's index holds only the calls that wait for nothing: a claim (its walk of
-- a name's priorities, its picks, and the next due time) never reads a waiting row,
-- however many there are. The claim's queries say "waiting = 0" to use it.
DROP INDEX futurecalls_calls_name_priority_due;
CREATE INDEX futurecalls_calls_name_priority_due
    ON futurecalls_calls (name, priority, due_at, id) WHERE waiting = 0;
