"""The bridge from Trio to the store's asyncio loop, and its error map.

Every database call crosses :func:`bridge` once; asyncpg and socket errors never cross
it raw. Connection problems become :class:`StoreUnavailableError` (the dispatcher
backs off and retries), everything else :class:`StoreError`; the driver's exception
is chained as ``__cause__``.

Errors are told apart by type and SQLSTATE, never by their text (which the server
translates, and asyncpg may reword). One case needs more: asyncpg raises the same
``InterfaceError`` for a connection or pool that is closed (an outage) and for misuse
(wrong argument count, concurrent use of one connection). There the state of the
connection or pool decides, on the asyncio side where it is known: see
:func:`on_connection` and :class:`ConnectionGone`.

Two more kinds of failure come from the client side of a statement, never from its
request, and are told apart by type too:

* ``InternalClientError`` (but not its ``OutdatedSchemaCacheError``): the connection's
  protocol state no longer matches the server's, as when the server closed a
  connection and asyncpg had read the error but not yet the end of the stream ("cannot
  switch to state 12; another operation (2) is in progress"). The connection is
  unusable: it is terminated (so the pool replaces it) and the error is an outage.
* ``ValueError`` / ``OverflowError`` raised by asyncpg while it turns a row into Python
  values (a time outside what ``datetime`` holds, text that is not UTF-8): the row is
  unreadable, not the connection, which stays usable. It is a :class:`StoreError`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Any, Final, TypeVar, cast

import asyncpg
import asyncpg.exceptions
from asyncpg.pool import PoolConnectionProxy
from trio_asyncio import aio_as_trio

from ..._errors import FutureCallsError, StoreError, StoreUnavailableError

T = TypeVar("T")

#: SQLSTATE classes (a code's first two characters) of server errors that mean "the
#: database cannot serve us right now". They are exactly the codes of asyncpg's
#: PostgresConnectionError, InsufficientResourcesError and OperatorInterventionError.
UNAVAILABLE_SQLSTATE_CLASSES: Final = frozenset(
    {
        "08",  # connection exception (asyncpg's own ConnectionDoesNotExistError too)
        "53",  # insufficient resources: too many connections, disk full, out of memory
        "57",  # operator intervention: admin shutdown, cannot connect now, query canceled
    }
)
#: Errors from beside the server that mean the same.
_UNAVAILABLE_TYPES: Final = (
    OSError,  # includes ConnectionError, socket.gaierror
    TimeoutError,  # asyncio.TimeoutError: connect, acquire or command timeout
)
#: The InterfaceErrors that are about the request, never about the connection.
_MISUSE: Final = (
    asyncpg.exceptions.ClientConfigurationError,
    asyncpg.exceptions.DataError,
    asyncpg.exceptions.UnsupportedClientFeatureError,
    asyncpg.exceptions.UnsupportedServerFeatureError,
)
#: What the bridge translates; anything else (a bug) passes as it is.
_DRIVER_ERRORS: Final = (
    asyncpg.exceptions.PostgresError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.InternalClientError,
    *_UNAVAILABLE_TYPES,
)


def _breaks_connection(exc: BaseException) -> bool:
    """Whether ``exc`` says the connection's protocol state is broken (see the module)."""
    return isinstance(exc, asyncpg.exceptions.InternalClientError) and not isinstance(
        exc, asyncpg.exceptions.OutdatedSchemaCacheError
    )


def is_unavailable(exc: BaseException) -> bool:
    """Whether a driver error means an outage, by its type or its SQLSTATE."""
    if isinstance(exc, _UNAVAILABLE_TYPES) or _breaks_connection(exc):
        return True
    if isinstance(exc, asyncpg.exceptions.PostgresError):
        # A class attribute, or for a code asyncpg does not know (UnknownPostgresError)
        # the server's own field.
        sqlstate = getattr(exc, "sqlstate", None)
        return isinstance(sqlstate, str) and sqlstate[:2] in UNAVAILABLE_SQLSTATE_CLASSES
    return False


def translate(exc: BaseException, what: str, *, gone: bool = False) -> StoreError:
    """The library error for a driver error raised while doing ``what``.

    ``gone``: the connection or pool that raised it is gone (see :class:`ConnectionGone`).
    """
    if gone or is_unavailable(exc):
        return StoreUnavailableError(
            f"PostgreSQL unavailable ({what}): {type(exc).__name__}: {exc}"
        )
    return StoreError(f"PostgreSQL error ({what}): {type(exc).__name__}: {exc}")


class ConnectionGone(Exception):
    """Raised on the asyncio side in place of an asyncpg ``InterfaceError`` that came
    from a connection or pool that is gone (closed, lost, detached from its pool,
    closing), or of an ``InternalClientError`` that broke the connection, so that the
    bridge reports an outage. Never leaves this package.
    """

    def __init__(self, error: Exception) -> None:
        super().__init__(error)
        self.error = error


class Unreadable(Exception):
    """Raised on the asyncio side in place of the ``ValueError`` / ``OverflowError``
    asyncpg raised while converting a value between PostgreSQL and Python, so that the
    bridge reports a :class:`StoreError` (and only for those: the same exception
    types from anywhere else are not the driver's). Never leaves this package.
    """

    def __init__(self, error: ValueError | OverflowError) -> None:
        super().__init__(error)
        self.error = error


def raise_if_gone(exc: BaseException, gone: bool) -> None:
    """In an ``except`` on the asyncio side: raise :class:`ConnectionGone` for ``exc``
    if it is an ``InterfaceError`` and the connection or pool it is about is ``gone``;
    else return (and the caller re-raises ``exc``)."""
    if gone and isinstance(exc, asyncpg.exceptions.InterfaceError) and not isinstance(exc, _MISUSE):
        raise ConnectionGone(exc) from exc


def lost(conn: asyncpg.Connection | PoolConnectionProxy) -> bool:
    """Whether a connection we hold died (asyncpg detaches a dead one from its pool
    proxy at once; the proxy then raises ``InterfaceError`` for everything)."""
    try:
        return bool(conn.is_closed())
    except asyncpg.exceptions.InterfaceError:
        return True


async def on_connection(
    conn: asyncpg.Connection | PoolConnectionProxy,
    fn: Callable[..., Awaitable[T]],
    *args: Any,
    **kwargs: Any,
) -> T:
    """On the asyncio side: await ``fn(*args, **kwargs)``, an operation on ``conn``.

    An ``InterfaceError`` it raises once ``conn`` is lost, or an ``InternalClientError``
    that broke ``conn`` (which is then terminated, so that its pool replaces it),
    becomes :class:`ConnectionGone`; a value asyncpg could not convert becomes
    :class:`Unreadable`.
    """
    try:
        return await fn(*args, **kwargs)
    except asyncpg.exceptions.InterfaceError as exc:
        raise_if_gone(exc, lost(conn))
        raise
    except asyncpg.exceptions.InternalClientError as exc:
        if not _breaks_connection(exc):
            raise
        # Unusable whatever asyncpg believes: make sure nobody gets it again.
        with suppress(asyncpg.exceptions.InterfaceError):  # already released
            conn.terminate()
        raise ConnectionGone(exc) from exc
    except FutureCallsError:
        raise  # the library's own answer (a PrerequisiteError...), not the driver's
    except (ValueError, OverflowError) as exc:
        # Server errors and encoding errors are asyncpg exceptions; these come from
        # turning a row into values (a time beyond datetime's range, text that is
        # not UTF-8). The statement itself completed: the connection is fine.
        raise Unreadable(exc) from exc


async def bridge(
    loop: Any, what: str, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any
) -> T:
    """Run an asyncio coroutine function on ``loop`` (the store's); translate errors.

    The loop is explicit: trio-asyncio's *current* loop is a context variable, and
    inside another store's (or the application's own) ``open_loop()`` it is not ours;
    asyncpg connections only work on the loop that created them.
    """
    try:
        return cast(T, await aio_as_trio(fn, loop=loop)(*args, **kwargs))
    except StoreError:
        raise
    except ConnectionGone as exc:
        raise translate(exc.error, what, gone=True) from exc.error
    except Unreadable as exc:
        raise StoreError(
            f"a PostgreSQL value Python cannot hold ({what}): "
            f"{type(exc.error).__name__}: {exc.error}"
        ) from exc.error
    except _DRIVER_ERRORS as exc:
        raise translate(exc, what) from exc
