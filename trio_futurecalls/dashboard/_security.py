"""The dashboard's safety model, as one ASGI middleware and two small checks.

* Read-only unless actions are allowed: every action is a POST, and a GET never changes
  anything (the routes say so; this module refuses any other method).
* CSRF: each action's form carries the server's secret token (random per server,
  :func:`new_secret`), compared in constant time; and a browser's POST must come from
  the dashboard's own origin (``Origin``, or else ``Referer``, naming the host the
  request was sent to). A request with a valid bearer token needs neither: a browser
  never adds an ``Authorization`` header to a cross-site request.
* An optional bearer token guards everything (pages, actions, ``/metrics``): an
  ``Authorization: Bearer`` header, or, for a browser, a cookie set by the login form
  (HttpOnly, SameSite=Strict; it holds an HMAC of the token, not the token).
* Hosts: when bound to a loopback address, only requests naming a loopback host are
  answered, so that a web page cannot reach the dashboard by DNS rebinding.
* Every answer forbids framing and inline scripts (Content-Security-Policy), and says
  ``nosniff`` and ``no-referrer`` beyond the dashboard.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Collection
from typing import Final
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "COOKIE",
    "Guard",
    "cookie_value",
    "csrf_token",
    "new_secret",
    "same_origin",
    "token_matches",
]

COOKIE: Final = "futurecalls_dashboard"
LOOPBACK_HOSTS: Final = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})

_HEADERS: Final = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        b"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
]


def new_secret() -> str:
    """A fresh random secret: one per server, for CSRF tokens and cookies."""
    return secrets.token_urlsafe(32)


def token_matches(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def cookie_value(secret: str, token: str) -> str:
    """What the login cookie holds: proof of the token, bound to this server's secret."""
    return hmac.new(secret.encode(), b"cookie:" + token.encode(), hashlib.sha256).hexdigest()


def csrf_token(secret: str) -> str:
    """The token every action's form carries: derived from the server's secret, so
    that the pages never show the secret itself."""
    return hmac.new(secret.encode(), b"csrf", hashlib.sha256).hexdigest()


def _host_only(host: str) -> str:
    """``host[:port]`` without the port (``[::1]:8470`` -> ``[::1]``)."""
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def same_origin(headers: Headers) -> bool:
    """A browser's POST came from a page of this server: its ``Origin`` (else its
    ``Referer``) names the host the request was sent to."""
    host = headers.get("host")
    source = headers.get("origin") or headers.get("referer")
    if not host or not source or source == "null":
        return False
    parts = urlsplit(source)
    return parts.scheme in ("http", "https") and parts.netloc == host


def _public(path: str) -> bool:
    """The sign-in page and the static files (the package's own) need no token."""
    return path == "/login" or path.startswith("/static/")


def bearer(headers: Headers) -> str | None:
    kind, _, value = headers.get("authorization", "").partition(" ")
    return value.strip() if kind.lower() == "bearer" else None


class Guard:
    """ASGI middleware: hosts, methods, the bearer token, and security headers."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        secret: str,
        token: str | None,
        allowed_hosts: Collection[str] | None,
    ) -> None:
        self._app = app
        self._secret = secret
        self._token = token
        self._hosts = None if allowed_hosts is None else frozenset(h.lower() for h in allowed_hosts)

    def authorized(self, headers: Headers) -> bool:
        """The request carries the bearer token (header or login cookie), or none is set."""
        if self._token is None:
            return True
        if token_matches(bearer(headers), self._token):
            return True
        cookies = {}
        for part in headers.get("cookie", "").split(";"):
            key, _, value = part.strip().partition("=")
            cookies[key] = value
        return token_matches(cookies.get(COOKIE), cookie_value(self._secret, self._token))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            await self._app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *_HEADERS]}
            await send(message)

        headers = Headers(scope=scope)
        host = _host_only(headers.get("host", "")).lower()
        response: Response
        if self._hosts is not None and host not in self._hosts:
            response = PlainTextResponse("unknown host", status_code=421)
        elif scope["method"] not in ("GET", "HEAD", "POST"):
            response = PlainTextResponse("method not allowed", status_code=405)
        elif _public(scope["path"]) or self.authorized(headers):
            await self._app(scope, receive, send_with_headers)
            return
        elif scope["method"] == "GET" and scope["path"] != "/metrics":
            response = RedirectResponse("/login", status_code=303)
        else:
            response = PlainTextResponse(
                "a bearer token is needed", status_code=401, headers={"www-authenticate": "Bearer"}
            )
        await response(scope, receive, send_with_headers)
