"""Hiding passwords in text: URLs, query strings and key=value connection strings.

Used wherever the library writes text that may hold a connection string: error
messages, logs, the CLI's output, and the error text kept with a dead letter.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final
from urllib.parse import unquote

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
