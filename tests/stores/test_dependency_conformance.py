"""Dependencies between calls on every store: a call with ``after`` waits until each
prerequisite succeeded; a prerequisite that ends otherwise takes its dependents (and
theirs) to dead letters with the reason; ids the store cannot see are refused.

The ``store`` fixture (tests/conftest.py) runs each test once per adapter.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from trio_futurecalls import (
    InvalidArgumentError,
    Lease,
    NewCall,
    PendingQuery,
    PrerequisiteError,
    QueueLength,
    Store,
)

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def new(name: str = "a", due: float = 0.0, **more: Any) -> NewCall:
    return NewCall(name=name, payload="null", due_at=at(due), scheduled_at=T0, **more)


def lease(*names: str, owner: str = "w1", until: float = 600) -> Lease:
    return Lease(owner=owner, expires_at=at(until), names=frozenset(names))


async def claimed(store: Store, now: float = 10, lease: Lease | None = None) -> list[int]:
    claim = await store.claim(at(now), {"a": 100, "b": 100, "c": 100}, 100, lease)
    return [c.id for c in claim.calls]


async def pending_ids(store: Store) -> list[int]:
    return [c.id for c in await store.pending(PendingQuery())]


async def test_a_dependent_waits_until_its_leased_prerequisite_completes(store: Store) -> None:
    (first,) = await store.schedule([new("a")])
    (second,) = await store.schedule([new("b", after=(first,))])
    waiting = {c.id: c.waiting_for for c in await store.pending(PendingQuery())}
    assert waiting == {first: (), second: (first,)}
    assert (await store.pending_counts(at(10)))["b"] == QueueLength(pending=1, due=0, waiting=1)
    claim = await store.claim(at(10), {"a": 5, "b": 5}, 10, lease("a"))
    assert [c.id for c in claim.calls] == [first]
    assert claim.calls[0].dependents
    assert await claimed(store) == []  # b still waits: a runs, it has not succeeded
    assert await store.complete("w1", first)
    assert await pending_ids(store) == [second]
    (ready,) = await store.pending(PendingQuery())
    assert ready.waiting_for == ()
    assert (await store.pending_counts(at(10)))["b"] == QueueLength(pending=1, due=1, waiting=0)
    assert await claimed(store) == [second]


async def test_release_and_lease_expiry_keep_dependents_waiting(store: Store) -> None:
    (first,) = await store.schedule([new("a")])
    (second,) = await store.schedule([new("b", after=[first])])
    assert await claimed(store, 10, lease("a", until=20)) == [first]
    assert await store.release("w1", first, at(15))
    assert await claimed(store, 16, lease("a", until=20)) == [first]
    # The lease expires: the call is due again, the dependent still waits.
    assert await claimed(store, 30, lease("a", owner="w2", until=90)) == [first]
    assert await store.complete("w2", first)
    assert await claimed(store, 31) == [second]


async def test_an_at_most_once_prerequisite_tells_its_end(store: Store) -> None:
    (first,) = await store.schedule([new("a")])
    (second,) = await store.schedule([new("b", after=[first])])
    (call,) = (await store.claim(at(10), {"a": 1}, 1)).calls
    assert call.dependents
    # Its row is gone, yet calls may still be made to wait for it while it runs.
    (third,) = await store.schedule([new("c", after=[first])])
    assert await claimed(store) == []
    assert await store.prerequisite_ended(first, None, at(11)) == 2
    assert await store.prerequisite_ended(first, None, at(11)) == 0  # told once
    assert sorted(await claimed(store, 12)) == [second, third]
    # Its record is gone with its end: a late dependent is refused.
    with pytest.raises(PrerequisiteError) as caught:
        await store.schedule([new("c", after=[first])])
    assert caught.value.call_id == first
    assert not caught.value.failed


async def test_a_started_at_most_once_call_without_dependents_cannot_be_waited_for(
    store: Store,
) -> None:
    (first,) = await store.schedule([new("a")])
    (call,) = (await store.claim(at(10), {"a": 1}, 1)).calls
    assert not call.dependents
    with pytest.raises(PrerequisiteError):
        await store.schedule([new("b"), new("b", after=[first])])
    assert await pending_ids(store) == []  # nothing of the batch was stored


async def test_unknown_and_failed_prerequisites_are_refused(store: Store) -> None:
    with pytest.raises(PrerequisiteError) as caught:
        await store.schedule([new("a", after=[123456])])
    assert caught.value.call_id == 123456
    assert not caught.value.failed
    (first,) = await store.schedule([new("a")])
    (call,) = (await store.claim(at(10), {"a": 1}, 1)).calls
    assert await store.dead_letter(call, "boom", at(11)) is not None
    with pytest.raises(PrerequisiteError) as caught:
        await store.schedule([new("b", after=[first])])
    assert caught.value.failed
    assert "dead letter" in str(caught.value)
    assert await pending_ids(store) == []


async def test_a_dead_letter_takes_its_dependents_along_transitively(store: Store) -> None:
    (root,) = await store.schedule([new("a")])
    (mid,) = await store.schedule([new("b", after=[root])])
    (leaf,) = await store.schedule([new("c", after=[mid])])
    (other,) = await store.schedule([new("c")])
    (call,) = (await store.claim(at(10), {"a": 1}, 1, lease("a"))).calls
    error = "Traceback (most recent call last):\n  ...\nValueError: bad input\n"
    assert await store.dead_letter(call, error, at(11), "w1") is not None
    assert await pending_ids(store) == [other]
    dead = {d.call_id: d for d in await store.dead_letters()}
    assert set(dead) == {root, mid, leaf}
    assert dead[mid].error == f"prerequisite {root} failed: ValueError: bad input"
    assert dead[leaf].error == (
        f"prerequisite {mid} did not run: prerequisite {root} failed: ValueError: bad input"
    )
    assert dead[mid].name == "b"
    assert dead[mid].failed_at == at(11)


async def test_an_at_most_once_prerequisite_dead_letter_ends_its_dependents(
    store: Store,
) -> None:
    (root,) = await store.schedule([new("a")])
    (dependent,) = await store.schedule([new("b", after=[root])])
    (call,) = (await store.claim(at(10), {"a": 1}, 1)).calls
    assert await store.dead_letter(call, "KeyError: 'x'", at(11)) is not None
    assert await pending_ids(store) == []
    errors = {d.call_id: d.error for d in await store.dead_letters()}
    assert errors[dependent] == f"prerequisite {root} failed: KeyError: 'x'"
    # The dead letter ended the running record: telling its end now does nothing.
    assert await store.prerequisite_ended(root, None, at(12)) == 0


async def test_an_at_most_once_prerequisite_that_will_not_run_again(store: Store) -> None:
    (root,) = await store.schedule([new("a")])
    (dependent,) = await store.schedule([new("b", after=[root])])
    await store.claim(at(10), {"a": 1}, 1)
    assert await store.prerequisite_ended(root, "it was interrupted", at(12)) == 1
    (dead,) = await store.dead_letters()
    assert dead.call_id == dependent
    assert dead.error == f"prerequisite {root} failed: it was interrupted"
    assert await pending_ids(store) == []


async def test_cancelling_a_prerequisite_ends_its_dependents(store: Store) -> None:
    (root,) = await store.schedule([new("a", identifier="job")])
    (dependent,) = await store.schedule([new("b", after=[root])])
    (unrelated,) = await store.schedule([new("b")])
    assert await store.cancel(root)
    (dead,) = await store.dead_letters()
    assert dead.call_id == dependent
    assert dead.error == f"prerequisite {root} failed: it was cancelled"
    # By identifier too.
    (root2,) = await store.schedule([new("a", identifier="job")])
    (dependent2,) = await store.schedule([new("b", after=[root2])])
    assert await store.cancel_identifier("job") == 1
    assert {d.call_id for d in await store.dead_letters()} == {dependent, dependent2}
    assert await pending_ids(store) == [unrelated]


async def test_cancelling_a_dependent_leaves_its_prerequisite_alone(store: Store) -> None:
    (root,) = await store.schedule([new("a")])
    (dependent,) = await store.schedule([new("b", after=[root])])
    assert await store.cancel(dependent)
    assert await claimed(store, 10, lease("a")) == [root]
    assert await store.complete("w1", root)
    assert await pending_ids(store) == []
    assert await store.dead_letters() == []


async def test_fan_in_waits_for_every_prerequisite(store: Store) -> None:
    roots = await store.schedule([new("a", due=i) for i in range(3)])
    (joined,) = await store.schedule([new("b", after=roots)])
    (waiting,) = [c for c in await store.pending(PendingQuery()) if c.id == joined]
    assert sorted(waiting.waiting_for) == sorted(roots)
    assert await claimed(store, 10, lease("a")) == roots
    for root in reversed(roots):
        assert await pending_ids(store) == [joined]
        assert await claimed(store, 10) == []
        assert await store.complete("w1", root)
    assert await claimed(store, 10) == [joined]


async def test_a_chain_in_one_batch(store: Store) -> None:
    ids = await store.schedule(
        [new("a"), new("b", after_batch=(0,)), new("c", after_batch=(1,), due=50)]
    )
    assert await claimed(store, 100, lease("a", "b", "c")) == [ids[0]]
    assert await store.complete("w1", ids[0])
    assert await claimed(store, 100, lease("a", "b", "c")) == [ids[1]]
    assert await store.complete("w1", ids[1])
    # The last step waits for its own due time too.
    claim = await store.claim(at(20), {"c": 1}, 1)
    assert claim.calls == []
    assert claim.next_due == at(50)
    assert await claimed(store, 100) == [ids[2]]


async def test_waiting_calls_do_not_count_for_next_due(store: Store) -> None:
    (root,) = await store.schedule([new("a", due=100)])
    await store.schedule([new("b", due=0, after=[root])])
    (later,) = await store.schedule([new("b", due=40)])
    claim = await store.claim(at(10), {"b": 5}, 5)
    assert claim.calls == []
    assert claim.next_due == at(40)
    assert later


async def test_a_retry_put_back_keeps_the_dependents_waiting(store: Store) -> None:
    (root,) = await store.schedule([new("a")])
    (dependent,) = await store.schedule([new("b", after=[root])])
    (call,) = (await store.claim(at(10), {"a": 1}, 1)).calls
    assert await store.put_back([call], None) == 1  # an at-most-once retry
    assert await store.prerequisite_ended(root, None, at(11)) == 0  # not running now
    assert await claimed(store, 12) == [root]
    assert await store.prerequisite_ended(root, None, at(13)) == 1
    assert await claimed(store, 14) == [dependent]


async def test_requeue_a_dead_letter_after_another_call(store: Store) -> None:
    (root,) = await store.schedule([new("a")])
    (dependent,) = await store.schedule([new("b", after=[root])])
    (call,) = (await store.claim(at(10), {"a": 1}, 1)).calls
    await store.dead_letter(call, "boom", at(11))
    dead = {d.call_id: d.id for d in await store.dead_letters()}
    # Requeue the prerequisite, then the dependent after the prerequisite's new call.
    new_root = await store.requeue_dead_letter(dead[root], at(12))
    assert new_root is not None
    with pytest.raises(PrerequisiteError):
        await store.requeue_dead_letter(dead[dependent], at(12), after=[987654])
    new_dependent = await store.requeue_dead_letter(dead[dependent], at(12), after=[new_root])
    assert new_dependent is not None
    assert await store.dead_letters() == []
    assert await claimed(store, 20, lease("a")) == [new_root]
    assert await store.complete("w1", new_root)
    assert await claimed(store, 20) == [new_dependent]


async def test_moving_unknown_names_ends_their_dependents(store: Store) -> None:
    (root,) = await store.schedule([new("gone")])
    (dependent,) = await store.schedule([new("b", after=[root])])
    assert await store.dead_letter_due("gone", at(10), "no class", at(10)) == 1
    errors = {d.call_id: d.error for d in await store.dead_letters()}
    assert errors == {root: "no class", dependent: f"prerequisite {root} failed: no class"}


async def test_a_diamond_ends_each_dependent_once(store: Store) -> None:
    (root,) = await store.schedule([new("a")])
    left, right = await store.schedule([new("b", after=[root]), new("b", after=[root])])
    (joined,) = await store.schedule([new("c", after=[left, right])])
    assert await store.cancel(root)
    dead = [d.call_id for d in await store.dead_letters()]
    assert sorted(dead) == sorted([left, right, joined])


async def test_bad_dependency_arguments_are_refused(store: Store) -> None:
    (root,) = await store.schedule([new("a")])
    bad: list[NewCall] = [
        new("b", after=("1",)),
        new("b", after=(0,)),
        new("b", after=(True,)),
        new("b", after=tuple(range(1, 1002))),
        new("b", after=(root,), unique_key="k"),
        new("b", after_batch=(0,)),  # no earlier call in the batch
    ]
    for call in bad:
        with pytest.raises(InvalidArgumentError):
            await store.schedule([call])
    with pytest.raises(InvalidArgumentError):
        await store.schedule([new("b"), new("b", after_batch=(1,))])  # itself
    with pytest.raises(InvalidArgumentError):
        await store.prerequisite_ended(0, None, at(1))
    assert await pending_ids(store) == [root]


async def test_a_started_record_lives_while_renewed_and_ends_when_abandoned(
    store: Store,
) -> None:
    (root,) = await store.schedule([new("a")])
    (dependent,) = await store.schedule([new("b", after=[root])])
    (other_root,) = await store.schedule([new("c")])
    (other_dependent,) = await store.schedule([new("b", after=[other_root])])
    # At-most-once claims with a lease (no leased names): recorded under w1 until 60.
    await store.claim(at(10), {"a": 1}, 1, lease(owner="w1", until=60))
    await store.claim(at(10), {"c": 1}, 1, lease(owner="w2", until=60))
    assert await store.end_abandoned_prerequisites(at(59)) == 0
    # w1 renews its record (another owner's is not renewed by it); w2 does not.
    assert await store.renew("w1", [root, other_root], at(120)) == {root}
    assert await store.end_abandoned_prerequisites(at(61)) == 1
    (dead,) = await store.dead_letters()
    assert dead.call_id == other_dependent
    assert dead.error.startswith(f"prerequisite {other_root} failed: its worker stopped")
    assert dead.failed_at == at(61)
    # Its end comes too late: nothing is left to tell.
    assert await store.prerequisite_ended(other_root, None, at(62)) == 0
    # w1's call, renewed, succeeds: its dependent runs.
    assert await store.end_abandoned_prerequisites(at(119)) == 0
    assert await store.prerequisite_ended(root, None, at(119)) == 1
    assert await claimed(store, 120) == [dependent]


async def test_a_started_record_without_a_lease_never_expires(store: Store) -> None:
    (root,) = await store.schedule([new("a")])
    await store.schedule([new("b", after=[root])])
    await store.claim(at(10), {"a": 1}, 1)
    assert await store.end_abandoned_prerequisites(at(10**6)) == 0
    assert await store.prerequisite_ended(root, None, at(10**6)) == 1


async def test_a_nul_in_a_reason_is_kept_escaped(store: Store) -> None:
    (root,) = await store.schedule([new("a")])
    (dependent,) = await store.schedule([new("b", after=[root])])
    (other,) = await store.schedule([new("gone")])
    (call,) = (await store.claim(at(10), {"a": 1}, 1, lease("a"))).calls
    assert await store.dead_letter(call, "bad\x00byte", at(11), "w1") is not None
    assert await store.dead_letter_due("gone", at(10), "no\x00class", at(11)) == 1
    errors = {d.call_id: d.error for d in await store.dead_letters()}
    assert errors == {
        root: "bad\\x00byte",
        dependent: f"prerequisite {root} failed: bad\\x00byte",
        other: "no\\x00class",
    }
