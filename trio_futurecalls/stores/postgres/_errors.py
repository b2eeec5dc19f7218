"""The bridge from Trio to the store's asyncio loop, and its error map.

Every database call crosses :func:`bridge` once; asyncpg and socket errors never cross
it raw. Connection problems become :class:`StoreUnavailableError` (the dispatcher
backs off and retries), everything else :class:`StoreError`; the driver's exception
is chained as ``__cause__``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar, cast

import asyncpg.exceptions
from trio_asyncio import aio_as_trio

from ..._errors import StoreError, StoreUnavailableError

T = TypeVar("T")

#: Errors that mean "the database cannot be reached right now".
_UNAVAILABLE: Final = (
    OSError,  # includes ConnectionError, socket.gaierror
    TimeoutError,  # asyncio.TimeoutError: connect, acquire or command timeout
    asyncpg.exceptions.PostgresConnectionError,  # class 08, ConnectionDoesNotExistError
    asyncpg.exceptions.OperatorInterventionError,  # 57: admin shutdown, cannot connect now
    asyncpg.exceptions.InsufficientResourcesError,  # 53: too many connections, disk full
)


def _unavailable(exc: BaseException) -> bool:
    if isinstance(exc, _UNAVAILABLE):
        return True
    # InterfaceError is also raised for misuse (wrong argument count, concurrent use of
    # one connection); only a closed or closing connection or pool means an outage.
    text = str(exc)
    return (
        isinstance(exc, asyncpg.exceptions.InterfaceError)
        and not isinstance(exc, asyncpg.exceptions.ClientConfigurationError)
        and ("closed" in text or "closing" in text or "released back to the pool" in text)
    )


def translate(exc: BaseException, what: str) -> StoreError:
    """The library error for a driver error raised while doing ``what``."""
    if _unavailable(exc):
        return StoreUnavailableError(
            f"PostgreSQL unavailable ({what}): {type(exc).__name__}: {exc}"
        )
    return StoreError(f"PostgreSQL error ({what}): {type(exc).__name__}: {exc}")


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
    except (
        asyncpg.exceptions.PostgresError,
        asyncpg.exceptions.InterfaceError,
        asyncpg.exceptions.InternalClientError,
        *_UNAVAILABLE,
    ) as exc:
        raise translate(exc, what) from exc
