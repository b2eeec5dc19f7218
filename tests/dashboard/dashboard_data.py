"""A store with something of everything for the dashboard's tests: calls pending,
due and waiting, a paused class, dead letters, a recurring schedule, a worker and a
cluster limit; and hostile text (markup) in a payload, an identifier and an error."""

from __future__ import annotations

from datetime import datetime, timedelta

from trio_futurecalls import ClusterLimit, NewCall, RecurringInfo, Store, StoredCall, WorkerInfo

HOSTILE_PAYLOAD = '{"html": "<script>alert(\\"payload\\")</script>"}'
HOSTILE_IDENTIFIER = "<img src=x onerror=alert(1)>"
HOSTILE_ERROR = (
    "Traceback (most recent call last):\n"
    '  File "calls.py", line 3, in invoke\n'
    "    connect('postgresql://app:hunter2secret@db/prod')\n"
    "RuntimeError: <script>alert('error')</script>"
)


def _call(name: str, due: datetime, now: datetime, **fields: object) -> NewCall:
    return NewCall(name=name, payload="{}", due_at=due, scheduled_at=now, **fields)  # type: ignore[arg-type]


async def populate(store: Store, now: datetime) -> dict[str, int]:
    """Fill ``store``; return the ids the tests look for."""
    ids = await store.schedule(
        [
            _call("send-email", now - timedelta(hours=3), now, identifier="user-1"),
            _call("send-email", now + timedelta(minutes=5), now, identifier="user-2"),
            _call("send-email", now + timedelta(hours=2), now),
            _call("report", now - timedelta(seconds=30), now),
            NewCall(
                name="hostile",
                payload=HOSTILE_PAYLOAD,
                due_at=now + timedelta(days=1),
                scheduled_at=now,
                identifier=HOSTILE_IDENTIFIER,
            ),
        ]
    )
    (waiting,) = await store.schedule([_call("report", now, now, after=(ids[4],))])
    await store.pause("report", now)
    failed = StoredCall(
        id=9001,
        name="charge",
        payload=HOSTILE_PAYLOAD,
        due_at=now - timedelta(minutes=10),
        identifier=HOSTILE_IDENTIFIER,
        scheduled_at=now - timedelta(minutes=20),
        attempts=3,
    )
    dead = await store.dead_letter(failed, HOSTILE_ERROR, now - timedelta(minutes=2))
    other = await store.dead_letter(
        StoredCall(
            id=9002,
            name="charge",
            payload="[1, 2]",
            due_at=now - timedelta(minutes=9),
            identifier=None,
            scheduled_at=now - timedelta(minutes=20),
            attempts=1,
        ),
        "ValueError: card declined",
        now - timedelta(minutes=1),
    )
    assert dead is not None
    assert other is not None
    await store.put_recurring(
        RecurringInfo(
            key="nightly-report",
            name="report",
            payload="null",
            cron="0 3 * * *",
            anchor=now,
            next_tick=now + timedelta(hours=6),
            created_at=now,
            updated_at=now,
        ),
        replace=True,
    )
    await store.register_worker(
        WorkerInfo(
            id="host-a:4242:abcd",
            host="host-a",
            pid=4242,
            started_at=now - timedelta(hours=1),
            heartbeat_at=now - timedelta(seconds=5),
            expires_at=now + timedelta(seconds=25),
            running=2,
            limits={
                "max_concurrent": 100,
                "classes": {"send-email": {"max_concurrent": 4, "delivery": "at_most_once"}},
            },
        )
    )
    await store.set_cluster_limit(
        ClusterLimit(kind="concurrency", name="send-email", tokens=5, set_at=now)
    )
    return {
        "overdue": ids[0],
        "hostile": ids[4],
        "waiting": waiting,
        "dead": dead,
        "dead_other": other,
    }
