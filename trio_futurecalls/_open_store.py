"""``open_store(url, **options)``: a store named by a URL (configuration, environment, CLI).

One URL picks the store and where it lives; ``options`` go to that store's opener::

    async with open_store(os.environ["CALLS_STORE"], schema="billing") as store:
        ...

* ``memory://``: a new, empty :class:`MemoryStore` (takes no options).
* ``sqlite:///relative/path``, ``sqlite:////absolute/path``: :func:`open_sqlite_store`
  (``recheck_interval=``, ``synchronous=``, ``busy_timeout=``).
* ``postgresql://user@host:port/db`` or ``postgres://...``: ``open_postgres_store``
  (``schema=``, ``max_pool_size=``...). It needs the ``postgres`` extra and is imported
  only when such a URL is opened, so ``import trio_futurecalls`` never loads asyncpg.

Schemes are case-insensitive. A URL of another form, or an option its opener does not
take, raises :class:`InvalidArgumentError` before anything is opened; no error message
shows a password from the URL (:func:`redact`).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Final, Literal
from urllib.parse import unquote

import attrs

from ._errors import InvalidArgumentError
from ._store import Store
from .stores.memory import MemoryStore
from .stores.sqlite import open_sqlite_store

__all__ = ["StoreURL", "open_store", "parse_store_url", "redact", "secrets_in"]

_Opener = Callable[..., AbstractAsyncContextManager[Store]]

_SQLITE_PREFIX: Final = "sqlite:///"
_URL_FORMS: Final = "memory://, sqlite:///path, postgresql://user@host/db or postgres://..."

#: ``password=`` (or ``sslpassword=``) in a URL's query string: the value ends at "&".
_QUERY_PASSWORD: Final = re.compile(r"(?i)([?&](?:ssl)?password=)([^&#\s'\"<>]*)")
#: ``password=...`` in a key=value connection string (libpq): the value is quoted (with
#: backslash escapes) or runs to the first unescaped whitespace; "&" and ";" are part
#: of it. An unterminated quote hides the rest of the text.
_KEY_VALUE_PASSWORD: Final = re.compile(
    r"(?i)(?<![\w?&])((?:ssl)?password\s*=\s*)('(?:[^'\\]|\\.)*'?|(?:\\.|[^\s\\])+)"
)
#: A URL with an authority (``scheme://...``), to the next whitespace or quote.
_URL: Final = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)([^\s'\"<>]*)")
#: Any other word with an "@": ``user:password@host``, ``scheme:user:password@host``.
_WORD_WITH_AT: Final = re.compile(r"[^\s'\"<>]*@[^\s'\"<>]*")
_SCHEME: Final = re.compile(r"(?i)[a-z][a-z0-9+.\-]*")
#: Known passwords shorter than this are not hidden wherever they appear (a password
#: "ab" would hide every "ab"); in a URL or connection string they still are.
MIN_SECRET_LENGTH: Final = 4


def _user_and_password(text: str, scheme: bool) -> tuple[str, str, str] | None:
    """``(shown part, password, rest)`` of ``[scheme:]user:password@rest``, or None."""
    # The user information ends at the last "@" before any query or fragment (not
    # before the first "/": a password written with a bare "/" must not show either).
    end = min((i for i in map(text.find, "?#") if i >= 0), default=len(text))
    userinfo, at, after = text[:end].rpartition("@")
    if not at or ":" not in userinfo:
        return None
    head, _, password = userinfo.partition(":")
    if scheme and ":" in password and _SCHEME.fullmatch(head):
        user, _, password = password.partition(":")
        head = f"{head}:{user}"
    return head, password, after + text[end:]


def _scan(text: str) -> tuple[str, list[str]]:
    """``text`` with every password of a URL or connection string replaced by ``***``,
    and the passwords found."""
    found: list[str] = []

    def query(match: re.Match[str]) -> str:
        found.append(match.group(2))
        return f"{match.group(1)}***"

    def key_value(match: re.Match[str]) -> str:
        value = match.group(2)
        if value.startswith("'"):
            value = value[1:-1] if len(value) > 1 and value.endswith("'") else value[1:]
        found.append(re.sub(r"\\(.)", r"\1", value))
        return f"{match.group(1)}***"

    def url(match: re.Match[str]) -> str:
        parts = _user_and_password(match.group(2), scheme=False)
        if parts is None:
            return match.group(0)
        found.append(parts[1])
        return f"{match.group(1)}{parts[0]}:***@{parts[2]}"

    def word(match: re.Match[str]) -> str:
        text = match.group(0)
        parts = None if "://" in text else _user_and_password(text, scheme=True)
        if parts is None:
            return text
        found.append(parts[1])
        return f"{parts[0]}:***@{parts[2]}"

    text = _QUERY_PASSWORD.sub(query, text)
    text = _KEY_VALUE_PASSWORD.sub(key_value, text)
    text = _URL.sub(url, text)
    text = _WORD_WITH_AT.sub(word, text)
    return text, found


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every password replaced by ``***``, for logs and messages.

    Masks the password of every ``scheme://user:password@host`` (and
    ``user:password@host``) and every ``password=...`` parameter of a query string or
    a key=value connection string, wherever they appear in ``text``; and each of
    ``secrets`` (see :func:`secrets_in`) anywhere. It errs on the side of hiding: it
    never raises, whatever the text.
    """
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return _scan(text)[0]


def secrets_in(text: str) -> list[str]:
    """The passwords a URL or connection string holds, as written and percent-decoded,
    to hide them wherever they appear (a driver's message may show them decoded);
    those shorter than MIN_SECRET_LENGTH are left out."""
    found: set[str] = set()
    for secret in _scan(text)[1]:
        found.update((secret, unquote(secret)))
    return sorted(s for s in found if len(s) >= MIN_SECRET_LENGTH)


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
