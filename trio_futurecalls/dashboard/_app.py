"""The dashboard as a Starlette app: its routes, and how each reads the store.

Every page is a GET that reads and changes nothing; every action is a POST that the
routes check (actions allowed, CSRF token, same origin) before acting. Store failures
and timeouts answer 503, bad filters 400, unknown ids 404: a page never shows a
traceback, and what it shows of the store (payloads, names, identifiers, errors) is
escaped by the templates (Jinja2 with autoescape on, no ``|safe``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection
from contextlib import aclosing
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode

import attrs
import jinja2
import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from .._errors import FutureCallsError, InvalidArgumentError
from .._redact import redact
from .._store import PendingQuery
from .._validate import MAX_ID, check_identifier, check_name
from . import _text
from ._data import MAX_ROWS, Source, find_call, overview
from ._security import (
    COOKIE,
    Guard,
    bearer,
    cookie_value,
    csrf_token,
    same_origin,
    token_matches,
)

__all__ = ["DashboardSettings", "build_app"]

_log = logging.getLogger("trio_futurecalls.dashboard")

PAGE_SIZE: Final = 50
MAX_PAGE: Final = MAX_ROWS // PAGE_SIZE
#: Largest form body an action reads (they hold a token and an id or two).
MAX_FORM_BYTES: Final = 16_384


@attrs.frozen(kw_only=True)
class DashboardSettings:
    """How one dashboard server behaves (built and checked once by ``serve_dashboard``)."""

    allow_actions: bool = False
    token: str | None = None
    #: Per-server secret: the CSRF token of every form, and the key of the login cookie.
    secret: str
    #: Seconds between live updates of the overview.
    refresh_seconds: float = 3.0
    #: Hosts the ``Host`` header may name (None: any).
    allowed_hosts: Collection[str] | None = None
    #: Passwords to hide wherever they would appear on a page (the store URL's).
    secrets: tuple[str, ...] = ()
    #: Clock (aware UTC), for tests.
    clock: Callable[[], datetime] = attrs.field(default=lambda: datetime.now(UTC))
    #: Seconds a page waits for the store before answering 503.
    store_timeout: float = 10.0


class HTTPProblem(Exception):
    """A request the dashboard answers with an error page (status and message)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _ASGIEndpoint:
    """A raw ASGI app as a Starlette ``Route`` endpoint (a function would be taken for a
    request handler)."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)


def _environment(settings: DashboardSettings) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("trio_futurecalls.dashboard", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["exact"] = _text.exact
    env.filters["duration"] = _text.duration
    env.filters["last_line"] = _text.last_line
    env.filters["pretty_json"] = _text.pretty_json
    env.filters["hide"] = lambda text: redact(str(text), settings.secrets)
    env.globals["due_text"] = _text.due_text
    env.globals["until"] = _text.until
    return env


def _text_param(request: Request, key: str) -> str | None:
    value = request.query_params.get(key, "").strip()
    return value or None


def _page(request: Request) -> int:
    raw = request.query_params.get("page", "1").strip() or "1"
    if not raw.isdecimal() or len(raw) > 9:
        raise HTTPProblem(400, f"page must be a whole number from 1 to {MAX_PAGE}")
    page = int(raw)
    if not 1 <= page <= MAX_PAGE:
        raise HTTPProblem(
            400,
            f"page must be from 1 to {MAX_PAGE}: the dashboard reads at most {MAX_ROWS} "
            "rows; narrow the filters",
        )
    return page


def _time_param(request: Request, key: str) -> datetime | None:
    raw = _text_param(request, key)
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise HTTPProblem(
            400, f"{key}: not a time; use ISO 8601, e.g. 2030-01-01T09:00 (UTC unless an offset)"
        ) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _checked(check: Callable[[object], Any], value: object) -> Any:
    try:
        return check(value)
    except InvalidArgumentError as exc:
        raise HTTPProblem(400, str(exc)) from None


def _id(value: object, what: str) -> int:
    if not isinstance(value, int) or not 1 <= value <= MAX_ID:
        raise HTTPProblem(404, f"no {what} with that id")
    return value


async def _small_form(request: Request) -> dict[str, str]:
    """A small urlencoded form (HTTPProblem 413 past MAX_FORM_BYTES: a body is never
    read in full before its size is known to be a form's)."""
    length = request.headers.get("content-length", "0")
    if not length.isdecimal() or int(length) > MAX_FORM_BYTES:
        raise HTTPProblem(413, "form too large")
    body = b""
    async with aclosing(request.stream()) as chunks:
        async for chunk in chunks:
            body += chunk
            if len(body) > MAX_FORM_BYTES:
                raise HTTPProblem(413, "form too large")
    try:
        return dict(parse_qsl(body.decode("utf-8"), max_num_fields=20))
    except (UnicodeDecodeError, ValueError):
        raise HTTPProblem(400, "unreadable form") from None


def build_app(source: Source, settings: DashboardSettings, metrics: ASGIApp | None) -> ASGIApp:
    """The dashboard over ``source``; ``metrics`` is served at ``/metrics`` when given."""
    env = _environment(settings)
    csrf = csrf_token(settings.secret)

    def render(request: Request, template: str, status: int = 200, **context: Any) -> Response:
        html = env.get_template(template).render(
            request=request,
            now=settings.clock(),
            store_label=source.label,
            allow_actions=settings.allow_actions,
            csrf=csrf,
            with_scheduler=source.scheduler is not None,
            refresh_seconds=settings.refresh_seconds,
            metrics=metrics is not None,
            **context,
        )
        return HTMLResponse(html, status_code=status)

    Handler = Callable[[Request], Awaitable[Response]]

    def page(handler: Handler) -> Handler:
        """Turn problems, store failures and store timeouts into error pages."""

        async def wrapped(request: Request) -> Response:
            try:
                with trio.fail_after(settings.store_timeout):
                    return await handler(request)
            except HTTPProblem as problem:
                return render(request, "error.html", problem.status, message=problem.message)
            except InvalidArgumentError as exc:
                # A value from the request the store's own checks refused (a time out
                # of range...): the request's fault, not the store's.
                return render(request, "error.html", 400, message=str(exc))
            except trio.TooSlowError:
                _log.warning("dashboard: the store did not answer %s in time", request.url.path)
                message = "the store did not answer in time"
                return render(request, "error.html", 503, message=message)
            except FutureCallsError as exc:
                _log.warning("dashboard: the store failed on %s: %r", request.url.path, exc)
                message = f"the store failed: {type(exc).__name__}: {exc}"
                return render(request, "error.html", 503, message=message)

        return wrapped

    async def read_form(request: Request) -> dict[str, str]:
        """An action's form (urlencoded, small), after checking it may act at all."""
        if not settings.allow_actions:
            raise HTTPProblem(
                403, "this dashboard is read-only (start it with --allow-actions to act)"
            )
        form = await _small_form(request)
        with_bearer = settings.token is not None and token_matches(
            bearer(request.headers), settings.token
        )
        if not with_bearer:
            if not token_matches(form.get("csrf"), csrf):
                raise HTTPProblem(403, "missing or wrong CSRF token: reload the page and retry")
            if not same_origin(request.headers):
                raise HTTPProblem(403, "cross-origin request refused")
        return form

    @page
    async def overview_page(request: Request) -> Response:
        data = await overview(source, settings.clock())
        return render(request, "overview.html", data=data)

    @page
    async def overview_fragment(request: Request) -> Response:
        data = await overview(source, settings.clock())
        return render(request, "_overview_table.html", data=data)

    @page
    async def calls_page(request: Request) -> Response:
        raw_name = _text_param(request, "name")
        name = None if raw_name is None else _checked(check_name, raw_name)
        identifier = _checked(check_identifier, _text_param(request, "identifier"))
        due_after = _time_param(request, "due_after")
        due_before = _time_param(request, "due_before")
        number = _page(request)
        offset = (number - 1) * PAGE_SIZE
        rows = await source.store.pending(
            PendingQuery(
                name=name,
                identifier=identifier,
                due_after=due_after,
                due_before=due_before,
                limit=offset + PAGE_SIZE + 1,
                now=settings.clock(),
            )
        )
        filters = {
            k: v
            for k in ("name", "identifier", "due_after", "due_before")
            if (v := _text_param(request, k)) is not None
        }
        return render(
            request,
            "calls.html",
            calls=rows[offset : offset + PAGE_SIZE],
            page=number,
            has_next=len(rows) > offset + PAGE_SIZE,
            filters=filters,
            query=lambda p: urlencode({**filters, "page": p}),
        )

    @page
    async def call_page(request: Request) -> Response:
        call_id = _id(request.path_params["call_id"], "call")
        raw_name = _text_param(request, "name")
        name = None if raw_name is None else _checked(check_name, raw_name)
        view = await find_call(source, call_id, settings.clock(), name)
        if not view.found:
            raise HTTPProblem(
                404,
                f"call {call_id} is not pending, not running here and not a dead letter "
                "(it may have finished)",
            )
        return render(request, "call.html", view=view)

    @page
    async def dead_letters_page(request: Request) -> Response:
        raw_name = _text_param(request, "name")
        name = None if raw_name is None else _checked(check_name, raw_name)
        number = _page(request)
        offset = (number - 1) * PAGE_SIZE
        rows = await source.store.dead_letters(name=name, limit=offset + PAGE_SIZE + 1)
        filters = {} if raw_name is None else {"name": raw_name}
        done = {k: request.query_params.get(k, "") for k in ("requeued", "purged")}
        return render(
            request,
            "dead_letters.html",
            letters=rows[offset : offset + PAGE_SIZE],
            page=number,
            has_next=len(rows) > offset + PAGE_SIZE,
            filters=filters,
            query=lambda p: urlencode({**filters, "page": p}),
            requeued=done["requeued"] if done["requeued"].isdecimal() else None,
            purged=done["purged"] if done["purged"].isdecimal() else None,
        )

    async def _dead_letter(letter_id: int) -> Any:
        for letter in await source.store.dead_letters(limit=MAX_ROWS):
            if letter.id == letter_id:
                return letter
        raise HTTPProblem(404, f"no dead letter {letter_id}")

    @page
    async def dead_letter_page(request: Request) -> Response:
        letter = await _dead_letter(_id(request.path_params["letter_id"], "dead letter"))
        return render(request, "dead_letter.html", letter=letter)

    @page
    async def requeue(request: Request) -> Response:
        await read_form(request)
        letter_id = _id(request.path_params["letter_id"], "dead letter")
        call_id = await source.store.requeue_dead_letter(letter_id, settings.clock())
        if call_id is None:
            raise HTTPProblem(404, f"no dead letter {letter_id} (requeued or purged already?)")
        return RedirectResponse(f"/dead-letters?requeued={call_id}", status_code=303)

    @page
    async def purge(request: Request) -> Response:
        await read_form(request)
        letter_id = _id(request.path_params["letter_id"], "dead letter")
        purged = await source.store.purge_dead_letters([letter_id])
        if not purged:
            raise HTTPProblem(404, f"no dead letter {letter_id} (requeued or purged already?)")
        return RedirectResponse(f"/dead-letters?purged={purged}", status_code=303)

    @page
    async def purge_all(request: Request) -> Response:
        form = await read_form(request)
        if form.get("confirm") != "all":
            raise HTTPProblem(400, "purging every dead letter needs confirm=all")
        purged = await source.store.purge_dead_letters(None)
        return RedirectResponse(f"/dead-letters?purged={purged}", status_code=303)

    @page
    async def recurring_page(request: Request) -> Response:
        return render(request, "recurring.html", schedules=await source.store.recurring_schedules())

    @page
    async def workers_page(request: Request) -> Response:
        workers = await source.store.workers(settings.clock())
        running = [] if source.scheduler is None else source.scheduler.running()
        return render(request, "workers.html", workers=workers, running=running)

    async def login_page(request: Request) -> Response:
        if settings.token is None:
            return RedirectResponse("/", status_code=303)
        if request.method == "GET":
            return render(request, "login.html", message=None)
        if not same_origin(request.headers):
            return render(request, "login.html", 403, message="wrong token")
        try:
            # Read like an action's form (at most MAX_FORM_BYTES): this page answers
            # anyone, before any token is checked.
            form = await _small_form(request)
        except HTTPProblem as problem:
            return render(request, "login.html", problem.status, message=problem.message)
        if not token_matches(form.get("token"), settings.token):
            return render(request, "login.html", 403, message="wrong token")
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(
            COOKIE,
            cookie_value(settings.secret, settings.token),
            httponly=True,
            samesite="strict",
            path="/",
        )
        return response

    routes: list[BaseRoute] = [
        Route("/", overview_page),
        Route("/overview/fragment", overview_fragment),
        Route("/calls", calls_page),
        Route("/calls/{call_id:int}", call_page),
        Route("/dead-letters", dead_letters_page),
        Route("/dead-letters/{letter_id:int}", dead_letter_page),
        Route("/dead-letters/{letter_id:int}/requeue", requeue, methods=["POST"]),
        Route("/dead-letters/{letter_id:int}/purge", purge, methods=["POST"]),
        Route("/dead-letters/purge", purge_all, methods=["POST"]),
        Route("/recurring", recurring_page),
        Route("/workers", workers_page),
        Route("/login", login_page, methods=["GET", "POST"]),
        Mount(
            "/static",
            StaticFiles(packages=[("trio_futurecalls.dashboard", "static")]),
            name="static",
        ),
    ]
    if metrics is not None:
        routes.append(Route("/metrics", _ASGIEndpoint(metrics), methods=["GET", "HEAD"]))

    async def not_found(request: Request, exc: Exception) -> Response:
        return render(request, "error.html", 404, message="no such page")

    app = Starlette(routes=routes, exception_handlers={404: not_found, 405: _method_not_allowed})
    return Guard(
        app,
        secret=settings.secret,
        token=settings.token,
        allowed_hosts=settings.allowed_hosts,
    )


async def _method_not_allowed(request: Request, exc: Exception) -> Response:
    return Response("method not allowed\n", status_code=405, media_type="text/plain")
