"""``open_store(url, **options)``: a store named by a URL (configuration, environment, CLI).

One URL picks the store and where it lives; ``options`` go to that store's opener::

    async with open_store(os.environ["CALLS_STORE"], schema="billing") as store:
        ...

* ``memory://``: a new, empty :class:`MemoryStore` (takes no options).
* ``sqlite:///relative/path``, ``sqlite:////absolute/path``: :func:`open_sqlite_store`
  (``recheck_interval=``, ``synchronous=``, ``busy_timeout=``).
* ``postgresql://user@host:port/db`` or ``postgres://...``: ``open_postgres_store``
  (``schema=``, ``max_pool_size=``, ``schedule_commit=``...). It needs the
  ``postgres`` extra and is imported only when such a URL is opened, so ``import
  trio_futurecalls`` never loads asyncpg.

Schemes are case-insensitive. A URL of another form, or an option its opener does not
take, raises :class:`InvalidArgumentError` before anything is opened; no error message
shows a password from the URL (:func:`redact`).
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Final, Literal

import attrs

from ._errors import InvalidArgumentError
from ._redact import redact as redact
from ._redact import secrets_in as secrets_in
from ._store import Store
from .stores.memory import MemoryStore
from .stores.sqlite import open_sqlite_store

__all__ = ["StoreURL", "open_store", "parse_store_url", "redact", "secrets_in"]

_Opener = Callable[..., AbstractAsyncContextManager[Store]]

_SQLITE_PREFIX: Final = "sqlite:///"
_URL_FORMS: Final = "memory://, sqlite:///path, postgresql://user@host/db or postgres://..."


@attrs.frozen
class StoreURL:
    """A checked store URL: which store, and the path or DSN its opener takes."""

    kind: Literal["memory", "sqlite", "postgres"]
    location: str


def parse_store_url(url: str) -> StoreURL:
    """Check ``url`` and say which store it names; raise :class:`InvalidArgumentError`."""
    if not isinstance(url, str):
        raise InvalidArgumentError(f"a store URL must be a str, got {type(url).__name__}")
    scheme, colon, rest = url.partition(":")
    scheme = scheme.lower() if colon else ""
    if scheme == "memory":
        if rest != "//":
            raise InvalidArgumentError(
                f"invalid memory store URL {redact(url)!r}: use memory:// (nothing after it)"
            )
        return StoreURL("memory", "")
    if scheme == "sqlite":
        path = rest[len("///") :]
        if not rest.startswith("///") or not path:
            raise InvalidArgumentError(
                f"invalid SQLite store URL {redact(url)!r}: use sqlite:///relative/path "
                "or sqlite:////absolute/path"
            )
        return StoreURL("sqlite", path)
    if scheme in ("postgresql", "postgres"):
        if not rest.startswith("//"):
            raise InvalidArgumentError(f"invalid PostgreSQL store URL {redact(url)!r}")
        return StoreURL("postgres", url)
    raise InvalidArgumentError(f"unsupported store URL {redact(url)!r}: use {_URL_FORMS}")


def _postgres_opener() -> _Opener:
    # Without the `postgres` extra, this import raises an ImportError naming it.
    from .stores.postgres import open_postgres_store

    return open_postgres_store


def _check_options(opener: Callable[..., object], url: str, options: dict[str, Any]) -> None:
    """Raise unless ``opener`` takes every one of ``options`` as a keyword-only argument."""
    parameters = inspect.signature(opener).parameters.values()
    accepted = [p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY]
    unknown = [name for name in options if name not in accepted]
    if unknown:
        takes = f"it takes {', '.join(accepted)}" if accepted else "it takes none"
        raise InvalidArgumentError(
            f"the store at {redact(url)!r} ({opener.__name__}) takes no option "
            f"{unknown[0]!r}; {takes}"
        )


@asynccontextmanager
async def open_store(url: str, /, **options: Any) -> AsyncIterator[Store]:
    """Open (creating and migrating if needed) the store that ``url`` names.

    ``options`` are passed to the store's opener (``schema=`` for PostgreSQL,
    ``synchronous=`` for SQLite...). A URL of another form and an option the opener
    does not take raise :class:`InvalidArgumentError`; a PostgreSQL URL without the
    ``postgres`` extra installed raises ``ImportError`` naming it.
    """
    target = parse_store_url(url)
    if target.kind == "memory":
        _check_options(MemoryStore, url, options)
        yield MemoryStore()
        return
    opener: _Opener = open_sqlite_store if target.kind == "sqlite" else _postgres_opener()
    _check_options(opener, url, options)
    async with opener(target.location, **options) as store:
        yield store
