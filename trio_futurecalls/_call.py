"""The ``FutureCall`` base class that users subclass to declare a kind of call."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import trio

from ._adaptive import Adaptive, check_max_concurrent
from ._cluster_limits import RateLimit, check_cluster_limit
from ._errors import InvalidArgumentError, UnregisteredCallError
from ._executors import Executor, Executors
from ._model import CallInfo
from ._payload import check_payload_type
from ._retry import Backoff, Delivery, ExponentialBackoff
from ._running import RunningCall
from ._validate import (
    MAX_ATTEMPTS,
    check_name,
    check_positive_seconds,
    check_priority,
)

T = TypeVar("T")


class FutureCall:
    """Base class of every kind of future call.

    Subclass it, set a stable :attr:`name` (it is stored in every row, so renaming a
    class's ``name`` orphans its pending calls), optionally :attr:`max_concurrent`
    and :attr:`payload_type`, and implement :meth:`invoke`::

        class SendEmail(FutureCall):
            name = "send-email"
            max_concurrent = 5
            payload_type = Email      # an attrs class; None means any JSON value

            async def invoke(self, session, payload: Email) -> None:
                ...

    A fresh instance is made for every run; :attr:`info` describes the call.
    """

    #: Stable name stored with each call. Letters, digits, ``_ . : -``; at most 200 chars.
    name: ClassVar[str]
    #: How many calls of this class may run at once in one scheduler; None = unlimited;
    #: an :class:`Adaptive` (``Adaptive(min=1, max=64)``): a limit the scheduler raises
    #: and lowers within those bounds from what it observes (README, "Adaptive
    #: concurrency").
    max_concurrent: ClassVar[int | Adaptive | None] = 1
    #: None for any JSON value, or an attrs class that payloads are converted to/from.
    payload_type: ClassVar[type[Any] | None] = None
    #: ``Delivery.AT_MOST_ONCE`` or ``AT_LEAST_ONCE``; None: the scheduler's default.
    delivery: ClassVar[Delivery | None] = None
    #: Attempts (starts, crashes included) before a failing call goes to dead letters.
    #: None: 1 for at-most-once classes (no retries), 5 for at-least-once classes (a
    #: call must survive a crash or two of its worker).
    max_attempts: ClassVar[int | None] = None
    #: Seconds to wait before the next attempt, given the attempt that failed.
    retry_backoff: ClassVar[Backoff] = ExponentialBackoff()
    #: Exception types that fail the call at once, whatever attempts are left.
    no_retry_on: ClassVar[tuple[type[BaseException], ...]] = ()
    #: Seconds one attempt may run before it is cancelled (a failed attempt); None: no limit.
    timeout: ClassVar[float | None] = None
    #: Priority of this class's calls (``schedule(priority=...)`` overrides it per call):
    #: among due calls with free slots, higher priority starts first. An int from
    #: ``MIN_PRIORITY`` (-1000) to ``MAX_PRIORITY`` (1000).
    priority: ClassVar[int] = 0
    #: At most this many calls of this class run at once across every scheduler on
    #: the same store (README, Cluster-wide limits); None: no cluster-wide limit set
    #: by this class (one stored by another worker or an operator still applies).
    cluster_max_concurrent: ClassVar[int | None] = None
    #: At most ``count`` starts of this class in any window of ``per``, across every
    #: scheduler on the store (README, Rate limits); None: none set by this class.
    rate_limit: ClassVar[RateLimit | None] = None
    #: Where the work runs (README, Blocking and CPU-heavy calls): ``Executor.TASK``
    #: (``async def invoke``, in the call's Trio task), ``Executor.THREAD`` or
    #: ``Executor.PROCESS`` (a plain ``def run(self, payload)``, no session).
    executor: ClassVar[Executor] = Executor.TASK

    # Set by the scheduler on the instance it runs (None when built by hand, e.g. in
    # a unit test: to_thread/to_process then use Trio's and trio-parallel's defaults).
    _executors: Executors | None = None
    _running: RunningCall | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Validate what the class body set, so mistakes surface at import time.
        if "name" in cls.__dict__:
            check_name(cls.__dict__["name"])
        if "max_concurrent" in cls.__dict__:
            check_max_concurrent(
                cls.__dict__["max_concurrent"], f"{cls.__qualname__}.max_concurrent"
            )
        if "cluster_max_concurrent" in cls.__dict__:
            check_cluster_limit(
                cls.__dict__["cluster_max_concurrent"], f"{cls.__qualname__}.cluster_max_concurrent"
            )
        if "rate_limit" in cls.__dict__ and not (
            cls.__dict__["rate_limit"] is None or isinstance(cls.__dict__["rate_limit"], RateLimit)
        ):
            raise InvalidArgumentError(
                f"{cls.__qualname__}.rate_limit must be a RateLimit or None, "
                f"got {cls.__dict__['rate_limit']!r}"
            )
        if "priority" in cls.__dict__:
            check_priority(cls.__dict__["priority"], f"{cls.__qualname__}.priority")
        if "payload_type" in cls.__dict__:
            check_payload_type(cls.__dict__["payload_type"], cls.__qualname__)
        where = cls.__qualname__
        if "delivery" in cls.__dict__ and not (
            cls.delivery is None or isinstance(cls.delivery, Delivery)
        ):
            raise InvalidArgumentError(f"{where}.delivery must be a Delivery or None")
        if "max_attempts" in cls.__dict__:
            attempts = cls.__dict__["max_attempts"]
            if attempts is not None and (
                isinstance(attempts, bool)
                or not isinstance(attempts, int)
                or not 1 <= attempts <= MAX_ATTEMPTS
            ):
                raise InvalidArgumentError(
                    f"{where}.max_attempts must be an int from 1 to {MAX_ATTEMPTS}, or None"
                )
        if "retry_backoff" in cls.__dict__ and not callable(cls.__dict__["retry_backoff"]):
            raise InvalidArgumentError(f"{where}.retry_backoff must be callable")
        if "no_retry_on" in cls.__dict__:
            types = cls.__dict__["no_retry_on"]
            if not isinstance(types, tuple) or not all(
                isinstance(t, type) and issubclass(t, BaseException) for t in types
            ):
                raise InvalidArgumentError(f"{where}.no_retry_on must be a tuple of exceptions")
        _check_executor(cls)
        if "timeout" in cls.__dict__ and cls.__dict__["timeout"] is not None:
            timeout = check_positive_seconds(cls.__dict__["timeout"], f"{where}.timeout")
            if not timeout:
                raise InvalidArgumentError(f"{where}.timeout must be > 0 or None")
        # A plain `def invoke` would return without running anything when awaited
        # (or fail only when a call runs): say so where the class is defined.
        if "invoke" in cls.__dict__ and not inspect.iscoroutinefunction(cls.__dict__["invoke"]):
            raise InvalidArgumentError(f"{where}.invoke must be an `async def` method")

    def __init__(self, info: CallInfo) -> None:
        self.info = info

    async def invoke(self, session: Any, payload: Any) -> None:
        """Do the call's work.

        ``session`` is this call's own handle to the store's database (see the store's
        session class); it is valid until ``invoke`` returns and never shared.
        ``payload`` is the decoded payload. Raising marks the call as failed (it is
        logged; other calls are unaffected).
        """
        raise NotImplementedError(f"{type(self).__qualname__} must implement invoke()")

    def run(self, payload: Any) -> None:
        """Do the work of an ``Executor.THREAD`` or ``Executor.PROCESS`` class's call, in
        a worker thread or process (a plain function: it blocks, burns CPU, and has
        no session). Raising marks the call as failed."""
        raise NotImplementedError(f"{type(self).__qualname__} must implement run()")

    async def to_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` in a worker thread of the scheduler's pool and return its
        result. Cancelling the call abandons the thread (it cannot be interrupted):
        the call keeps its slots until the thread ends."""
        if self._executors is None:  # not run by a scheduler: Trio's own pool
            return await trio.to_thread.run_sync(fn, *args, abandon_on_cancel=True)
        return await self._executors.in_thread(self._running, fn, *args)

    async def to_process(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` in a worker process of the scheduler's pool and return its
        result. ``fn`` must be importable (a module-level function); ``args`` and the
        result cross by pickle (pass JSON-like values); cancelling the call kills the
        worker process."""
        if self._executors is None:  # not run by a scheduler: trio-parallel's own pool
            import trio_parallel

            result: T = await trio_parallel.run_sync(fn, *args, kill_on_cancel=True)
            return result
        return await self._executors.in_process(fn, *args)


def check_call_class(cls: object) -> type[FutureCall]:
    """Return ``cls`` if it is a usable ``FutureCall`` subclass, else raise."""
    if not (isinstance(cls, type) and issubclass(cls, FutureCall)) or cls is FutureCall:
        raise UnregisteredCallError(f"{cls!r} is not a FutureCall subclass")
    if not isinstance(getattr(cls, "name", None), str):
        raise UnregisteredCallError(f"{cls.__qualname__} has no `name` class attribute")
    check_name(cls.name)
    if cls.executor is Executor.TASK:
        if cls.invoke is FutureCall.invoke:
            hint = (
                ""
                if cls.run is FutureCall.run
                else " (it has run(): set executor = Executor.THREAD or Executor.PROCESS?)"
            )
            raise UnregisteredCallError(f"{cls.__qualname__} does not implement invoke(){hint}")
    elif cls.run is FutureCall.run:
        raise UnregisteredCallError(f"{cls.__qualname__} does not implement run()")
    return cls


def _check_executor(cls: type[FutureCall]) -> None:
    """Check a class's executor against what it implements, at class definition."""
    where = cls.__qualname__
    if "executor" in cls.__dict__ and not isinstance(cls.__dict__["executor"], Executor):
        raise InvalidArgumentError(
            f"{where}.executor must be an Executor (TASK, THREAD or PROCESS), "
            f"got {cls.__dict__['executor']!r}"
        )
    if cls.executor is Executor.TASK:
        # Only a class with a name of its own: an abstract base may have a helper
        # called run (registration still tells a class without invoke).
        named = isinstance(cls.__dict__.get("name"), str)
        if named and "run" in cls.__dict__ and cls.invoke is FutureCall.invoke:
            raise InvalidArgumentError(
                f"{where} implements run() but not invoke(): set executor = "
                "Executor.THREAD or Executor.PROCESS to run it in a thread or process"
            )
        return
    kind = cls.executor.name
    if cls.invoke is not FutureCall.invoke:
        raise InvalidArgumentError(
            f"{where} is an Executor.{kind} class: implement run(self, payload), "
            "not invoke() (an async invoke can use await self.to_thread(...) instead)"
        )
    if inspect.iscoroutinefunction(cls.run):  # its own, or inherited (a mixin's)
        raise InvalidArgumentError(
            f"{where}.run must be a plain function (def, not async def): it runs in a "
            f"{kind.lower()}"
        )
    if cls.executor is Executor.PROCESS and "<locals>" in cls.__qualname__:
        raise InvalidArgumentError(
            f"{where} is an Executor.PROCESS class defined inside a function: the "
            "worker process imports the class by name, so define it at module level"
        )


def build_registry(calls: Any) -> dict[str, type[FutureCall]]:
    """Map names to classes; reject duplicates and non-FutureCall entries."""
    if isinstance(calls, type):
        raise InvalidArgumentError("calls must be an iterable of FutureCall classes")
    registry: dict[str, type[FutureCall]] = {}
    for cls in calls:
        checked = check_call_class(cls)
        other = registry.get(checked.name)
        if other is not None and other is not checked:
            raise InvalidArgumentError(
                f"{other.__qualname__} and {checked.__qualname__} share the name {checked.name!r}"
            )
        registry[checked.name] = checked
    return registry
