"""The production store: PostgreSQL through asyncpg, bridged to Trio with trio-asyncio.

Use it as::

    from trio_futurecalls.stores.postgres import open_postgres_store

    async with open_postgres_store("postgresql://app@db/app", max_pool_size=12) as store:
        async with open_scheduler(store, [SendEmail], max_concurrent=10) as scheduler:
            ...

Only this package imports ``asyncpg`` and ``trio_asyncio``, the ``postgres`` extra
(``pip install 'trio_futurecalls[postgres]'``); ``trio_futurecalls`` itself never
imports them, and importing this package without them raises an ``ImportError`` that
names the extra. :func:`open_postgres_store` opens one asyncio loop for the store's
lifetime (``trio_asyncio.open_loop()``), creates an asyncpg pool, migrates the schema
and runs a ``LISTEN`` task while the store has wake-up listeners; every database call
crosses the bridge once (``aio_as_trio``), so the rest of the program stays pure Trio.

**Connections.** The store holds two pool connections for its own statements, one
for claims and one for the rest (``schedule``, completions...), so that they skip the
pool's acquire and release; a statement that finds its connection busy takes another
pool connection. The claims' connection has ``plan_cache_mode = force_generic_plan``:
the claim is a large statement that takes the server longer to plan than to run, and
PostgreSQL would plan it anew for every claim whenever the statistics make its generic
plan look dear (a table of a million future rows does). The store's other statements
are single statements and leave no session state (the schedules of
``schedule_commit="asynchronous"`` set ``synchronous_commit`` for their own transaction
only), so the pool does not reset a connection only they used; a connection a running
call's session used gets ``RESET ROLE; SET SESSION AUTHORIZATION DEFAULT; DISCARD
TEMP`` and then asyncpg's reset (``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *;
RESET ALL``) when released,
before anyone else can have it; an open transaction is rolled back. Not undone:
statements a session prepared by hand (SQL ``PREPARE``) and type codecs it set on
``session.connection()`` (asyncpg's statement cache depends on them staying). The
claims' connection is reset so too, so no session gets its setting. A held connection
goes back to the pool when anything goes wrong with it, when a session or statement
waits for a connection (sessions never wait for an idle held one) and when the store
closes.

**Schema.** Everything lives in one PostgreSQL schema (``futurecalls`` by default):
``calls``, ``dead_letters`` and ``schema_version``. Migrations are applied in one
transaction under ``pg_advisory_xact_lock``, so several processes may start at once.

**Claims.** ``claim`` is one ``DELETE ... RETURNING`` over rows picked with
``FOR UPDATE SKIP LOCKED``: several processes can run schedulers over the same schema
and a call is handed to exactly one of them. The claim round trip is shielded from
cancellation, so rows deleted in the database are always handed to the dispatcher.
If the connection drops *after* the server committed a claim but before the reply
arrived, those calls are lost (at-most-once; that is the price of deleting on start).

**Wake-ups.** ``schedule`` sends ``pg_notify`` in the same statement that inserts, on a
channel per schema (:attr:`PostgresStore.channel`, payload: the earliest due time in
epoch microseconds). The listener task ``LISTEN``\\ s on a dedicated connection (outside
the pool) and calls the registered listeners for notifications from every process,
this one included. When that connection drops it reconnects with backoff and then
calls the listeners once with the epoch, since notifications may have been missed. It
is opened when the first listener is added (a scheduler that runs calls adds one and
waits for it: :meth:`PostgresStore.wait_listening`) and closed with the last, so a
store opened only to schedule (a producer) opens no LISTEN connection and hears none
of its own notifications.
``recheck_interval`` (default 5 s) remains as a fallback for anything lost anyway.

**Errors.** asyncpg and socket errors never reach users raw: connection problems
(refused, reset, timed out, server shutting down, too many connections, pool
acquire timeouts, asyncpg's ``InternalClientError``) become
:class:`StoreUnavailableError`, everything else :class:`StoreError`; the original is
chained as ``__cause__``. While the database is
down, every method fails within ``connect_timeout``/``command_timeout`` seconds and
the store recovers by itself when the server is back (the dispatcher retries).

**Writes after a call** (completions, releases, hand-backs, dead letters) that calls
ask for at the same time share one statement per kind (``_grouped.py``), so that calls
ending together take one connection, not one each. They are not shielded here: the
engine bounds them (``CLEANUP_TIMEOUT``).

**Values.** Stored times stay within what Python holds (with a day of margin) and
attempts within 1,000,000: CHECKs (migration 0003, which moved older offenders to dead
letters) and the checks every store makes of its arguments (``StoreArgs``). So every
value a claim returns converts to Python: a claim never deletes rows it then cannot
hand over.

**Pool size.** The pool serves the dispatcher's claims, application calls to
``schedule``/``cancel``..., and one connection per running call *that uses its session*
(sessions acquire lazily, on first use, and keep that connection until the call ends).
So size it as :func:`recommended_pool_size`: ``max_concurrent + 2`` (one per
concurrently running call, one for the dispatcher's claims, one for the store's other
statements and scheduling from application code). The ``LISTEN`` connection is not taken
from the pool: the server sees at most ``max_pool_size + 1`` connections per store. A
pool that is too small makes sessions wait for a connection (up to ``acquire_timeout``,
then :class:`StoreUnavailableError`); :meth:`PostgresStore.check_pool_size` logs a
warning on ``trio_futurecalls.store.postgres`` and returns False in that case, and also
when the server has no room for such a pool (``max_connections``, less reserved slots
and other clients' connections, read at open: :attr:`PostgresStore.server_room`).
"""

# Checked before anything else, so that a missing extra is named here rather than
# surfacing as a bare "No module named ..." from deep inside a submodule.
try:
    import asyncpg as _asyncpg
    import trio_asyncio as _trio_asyncio
except ImportError as exc:
    raise ImportError(
        "the PostgreSQL store needs asyncpg and trio-asyncio: "
        "pip install 'trio_futurecalls[postgres]'",
        name=exc.name,
    ) from exc

from ..._util import fixup_module_metadata
from ._open import DEFAULT_RECHECK_INTERVAL as DEFAULT_RECHECK_INTERVAL
from ._open import open_postgres_store as open_postgres_store
from ._pool import recommended_pool_size as recommended_pool_size
from ._schema import CHANNEL_PREFIX as CHANNEL_PREFIX
from ._schema import DEFAULT_SCHEMA as DEFAULT_SCHEMA
from ._schema import MAX_SCHEMA_LENGTH as MAX_SCHEMA_LENGTH
from ._schema import check_schema_name as check_schema_name
from ._session import IsolationLevel as IsolationLevel
from ._session import PostgresSession as PostgresSession
from ._store import PostgresStore as PostgresStore

__all__ = [
    "DEFAULT_RECHECK_INTERVAL",
    "DEFAULT_SCHEMA",
    "PostgresSession",
    "PostgresStore",
    "open_postgres_store",
    "recommended_pool_size",
]

# They report their public home (in reprs and documentation), as when this package
# was one module: ``trio_futurecalls.stores.postgres.PostgresStore``.
fixup_module_metadata(__name__, globals())
del _asyncpg, _trio_asyncio
