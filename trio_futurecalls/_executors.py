"""Where a call's work runs: in its Trio task (the default), a worker thread, or a
worker process; and one scheduler's thread and process pools.

A class chooses with ``executor = Executor.THREAD`` / ``Executor.PROCESS`` and a plain
``run(self, payload)``; an async ``invoke`` sends one blocking part away with
``await self.to_thread(fn, *args)`` / ``await self.to_process(fn, *args)``.

Threads are Trio's (``trio.to_thread.run_sync``), limited by the scheduler's own
``CapacityLimiter`` (``max_threads``). A thread cannot be interrupted: when its call
is cancelled (timeout, cancel request, lost lease, shutdown) it is *abandoned*, and
the call keeps its slots until the thread really ends (``_CallThread`` counts it on
the call's :class:`RunningCall`), so abandoned threads never take a limit past its
value.

Processes come from a ``trio_parallel`` worker context, opened on first use and
closed with the scheduler (``max_processes`` workers, spawned, so no state of this
process is forked into them). A cancelled process call kills its worker (the pool
starts a new one). What crosses into a ``PROCESS`` class's worker is the stored JSON
payload text, the :class:`CallInfo` and the class's import path: never a pickled
payload; what comes back is nothing, or the error's traceback as text
(:class:`ProcessCallError`), so an exception that cannot cross cannot break the pool.
"""

from __future__ import annotations

import enum
import importlib
import inspect
import logging
import os
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any, Final, TypeVar, cast, final

import attrs
import trio

from ._errors import FutureCallsError, SchedulerClosedError

if TYPE_CHECKING:
    from ._model import CallInfo
    from ._running import RunningCall

_log = logging.getLogger("trio_futurecalls.call")

T = TypeVar("T")

#: Threads that may run calls' work at once, unless ``max_threads`` says otherwise
#: (Trio's own default).
DEFAULT_MAX_THREADS: Final = 40
#: Seconds idle worker processes get to exit when the scheduler closes.
_PROCESS_EXIT_GRACE: Final = 10.0


def default_max_processes() -> int:
    """The CPUs this process may use: the default number of worker processes."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


class Executor(enum.Enum):
    """Where a call class's work runs (``FutureCall.executor``)."""

    #: In the call's own Trio task: ``async def invoke(self, session, payload)``.
    TASK = "task"
    #: In a worker thread: a plain ``def run(self, payload)``. No session.
    THREAD = "thread"
    #: In a worker process: a plain ``def run(self, payload)`` of an importable class.
    #: No session; the payload arrives as JSON, decoded in the worker.
    PROCESS = "process"


@final
@attrs.frozen(kw_only=True)
class ExecutorStatistics:
    """One pool of a scheduler (``SchedulerStatistics.threads`` / ``.processes``)."""

    #: Threads (processes) that may run calls' work at once.
    capacity: int
    #: Running now, abandoned threads included.
    busy: int
    #: Threads whose call was cancelled (timeout, cancel, shutdown) but which still
    #: run: each keeps its call's slots until it ends. Always 0 for processes (a
    #: cancelled process call's worker is killed).
    abandoned: int = 0


class ProcessCallError(FutureCallsError):
    """The work of a call run in a worker process raised there.

    ``str()`` is the worker's traceback (as text: the exception object itself does
    not cross back); :attr:`type_name` is the exception's qualified type name, and
    :attr:`for_good` whether it was one of the class's ``no_retry_on`` exceptions.
    """

    def __init__(self, type_name: str, text: str, for_good: bool) -> None:
        super().__init__(text)
        self.type_name = type_name
        self.for_good = for_good

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.type_name, str(self), self.for_good))


def fails_for_good(failure: BaseException, no_retry_on: tuple[type[BaseException], ...]) -> bool:
    """True when ``failure`` is one of the class's ``no_retry_on`` exceptions, or a
    group (from a nursery inside the call) made only of them; for a
    :class:`ProcessCallError`, what the worker process found, or the error itself
    (a class may list ``ProcessCallError``: no retry when the worker died)."""
    if isinstance(failure, ProcessCallError) and failure.for_good:
        return True
    if not no_retry_on:
        return False
    if isinstance(failure, BaseExceptionGroup) and not isinstance(failure, no_retry_on):
        _, rest = failure.split(no_retry_on)
        return rest is None
    return isinstance(failure, no_retry_on)


def process_workers(classes: Iterable[Any], max_processes: int) -> int:
    """How many worker processes the ``Executor.PROCESS`` classes among ``classes``
    may use at once (their ``max_concurrent`` added up; unlimited or adaptive: the
    pool), at most ``max_processes``."""
    total = 0
    for cls in classes:
        if cls.executor is Executor.PROCESS:
            limit = cls.max_concurrent
            total += limit if isinstance(limit, int) else max_processes
    return min(total, max_processes)


class Executors:
    """One scheduler's thread limiter and (lazily opened) process pool."""

    def __init__(self, max_threads: int, max_processes: int) -> None:
        self.threads = trio.CapacityLimiter(max_threads)
        self.processes = trio.CapacityLimiter(max_processes)
        #: Threads abandoned by their cancelled call that have not ended yet.
        self.abandoned = 0
        self._stack: AsyncExitStack | None = None
        self._context: Any = None  # a trio_parallel.WorkerContext, once opened
        self._opening = trio.Lock()

    @asynccontextmanager
    async def open(self) -> AsyncIterator[None]:
        """The pools' lifetime: worker processes started inside it exit at its end
        (it must outlive every call that may use them)."""
        async with AsyncExitStack() as stack:
            self._stack = stack
            try:
                yield
            finally:
                self._stack = None

    def statistics(self) -> tuple[ExecutorStatistics, ExecutorStatistics]:
        """(threads, processes) now."""
        return (
            ExecutorStatistics(
                capacity=int(self.threads.total_tokens),
                busy=int(self.threads.borrowed_tokens),
                abandoned=self.abandoned,
            ),
            ExecutorStatistics(
                capacity=int(self.processes.total_tokens),
                busy=int(self.processes.borrowed_tokens),
            ),
        )

    async def in_thread(
        self,
        running: RunningCall | None,
        fn: Callable[..., T],
        *args: Any,
        on_start: Callable[[], None] | None = None,
    ) -> T:
        """``fn(*args)`` in a worker thread; abandoned (not waited for) when cancelled,
        the call holding its slots until the thread ends. ``on_start`` is called when
        the thread starts (not while it waits for a free thread)."""
        thread = _CallThread(self, running, on_start)
        try:
            # Trio takes any object with the two limiter methods (its docs say so;
            # its annotation says CapacityLimiter).
            limiter = cast(trio.CapacityLimiter, thread)
            return await trio.to_thread.run_sync(fn, *args, abandon_on_cancel=True, limiter=limiter)
        except trio.Cancelled:
            thread.abandon(fn)
            raise

    async def in_process(
        self, fn: Callable[..., T], *args: Any, on_start: Callable[[], None] | None = None
    ) -> T:
        """``fn(*args)`` in a worker process; the worker is killed when cancelled.
        ``on_start`` is called once a worker is ready to take ``fn`` (not while the
        call waits for a free worker, nor while one is being started)."""
        context = await self._process_context()
        import trio_parallel

        try:
            # The slot is taken here (trio-parallel's own limiting is a no-op), so that
            # a worker can be started before the call counts as started.
            async with self.processes:
                if on_start is not None:
                    if not context.statistics().idle_workers:
                        # Start one (about 0.5 s); it goes back to the pool idle.
                        await context.run_sync(_ready, kill_on_cancel=True, limiter=_HELD)
                    on_start()
                result: T = await context.run_sync(fn, *args, kill_on_cancel=True, limiter=_HELD)
        except SystemExit as exc:
            # Raised in the worker (sys.exit there) and carried back: that process's
            # business, this call's failure; never an exit of this process.
            from ._calllog import error_text

            raise ProcessCallError("builtins.SystemExit", error_text(exc), False) from None
        except trio_parallel.BrokenWorkerError as exc:
            # The worker died under the call (os._exit, a crash, the OOM killer...).
            codes = [a.exitcode for a in exc.args if hasattr(a, "exitcode")]
            raise ProcessCallError(
                "BrokenWorkerError",
                f"the worker process died while running {getattr(fn, '__qualname__', fn)}"
                + (f" (exit code {codes[0]})" if codes else ""),
                for_good=False,
            ) from None
        return result

    async def start_processes(self, count: int) -> None:
        """Start ``count`` worker processes (at most the pool's size) ahead of the
        first calls, so that no call waits for a worker to start (nor has its
        ``timeout`` count that). Each holds a pool slot while it starts: a call that
        comes meanwhile takes the first one ready. A worker that cannot start is
        logged; calls start theirs as they need them."""
        count = min(count, int(self.processes.total_tokens))
        try:
            context = await self._process_context()
            async with trio.open_nursery() as nursery:
                for _ in range(count):
                    nursery.start_soon(self._start_one, context, count)
        except Exception as exc:  # whatever spawning raised: the calls will try again
            _log.warning("could not start worker processes ahead of calls: %r", exc)

    async def _start_one(self, context: Any, count: int) -> None:
        async with self.processes:
            alive = context.statistics()
            if alive.idle_workers + alive.running_workers < count:  # calls started some
                await context.run_sync(_ready, kill_on_cancel=True, limiter=_HELD)

    async def run_in_process(
        self, cls: type[Any], info: CallInfo, payload: str, on_start: Callable[[], None]
    ) -> None:
        """Run ``cls(info).run(decoded payload)`` in a worker process (a PROCESS class's
        call); raise :class:`ProcessCallError` with the worker's traceback if it raised."""
        failure = await self.in_process(
            _run_call_in_process,
            cls.__module__,
            cls.__qualname__,
            info,
            payload,
            on_start=on_start,
        )
        if failure is not None:
            raise ProcessCallError(*failure)

    async def _process_context(self) -> Any:
        if self._context is not None:
            return self._context
        async with self._opening:
            if self._context is None:
                if self._stack is None:
                    raise SchedulerClosedError("the scheduler's process pool is closed")
                self._context = await self._stack.enter_async_context(_worker_context())
            return self._context


@asynccontextmanager
async def _worker_context() -> AsyncIterator[Any]:
    """trio-parallel's worker context; a worker found dead or killed when it closes
    (the OOM killer, an operator, systemd's SIGTERM to the whole group on stop) is
    logged, not raised: the scheduler's exit is still clean."""
    import trio_parallel  # only a scheduler that uses processes needs it

    manager = trio_parallel.open_worker_context(grace_period=_PROCESS_EXIT_GRACE)
    context = await manager.__aenter__()
    try:
        yield context
    finally:
        try:
            # (Its closing is shielded.) Whatever ended the scheduler goes on as is.
            await manager.__aexit__(None, None, None)
        except trio_parallel.BrokenWorkerError as exc:
            _log.warning("worker processes did not exit cleanly: %s", exc.args[0])


class _CallThread:
    """``trio.to_thread``'s limiter for one thread of a call: the executors' thread
    limiter, plus a count of the call's live threads. Trio releases the limiter when
    the thread really ends, also after it was abandoned: that is when the call's
    count drops and, at zero, the call (waiting in ``RunningCall.threads_ended``)
    may give its slots back."""

    __slots__ = ("_abandoned", "_executors", "_on_start", "_running", "_started_at", "_state")

    def __init__(
        self,
        executors: Executors,
        running: RunningCall | None,
        on_start: Callable[[], None] | None = None,
    ) -> None:
        self._executors = executors
        self._running = running
        self._on_start = on_start
        self._state = "waiting"  # -> "running" -> "ended"
        self._abandoned = False
        self._started_at = 0.0

    async def acquire_on_behalf_of(self, borrower: object) -> None:
        await self._executors.threads.acquire_on_behalf_of(borrower)
        # (No checkpoint from here until Trio starts the thread.)
        self._state = "running"
        self._started_at = trio.current_time()
        if self._running is not None:
            self._running.thread_started()
        if self._on_start is not None:
            self._on_start()

    def release_on_behalf_of(self, borrower: object) -> None:
        self._executors.threads.release_on_behalf_of(borrower)
        self._state = "ended"
        if self._abandoned:
            self._executors.abandoned -= 1
            _log.warning(
                "an abandoned thread ended after %.3f s%s",
                trio.current_time() - self._started_at,
                "" if self._running is None else f" (call id={self._running.info.id})",
            )
        if self._running is not None:
            self._running.thread_ended()

    def abandon(self, fn: Callable[..., Any]) -> None:
        """The caller was cancelled: if the thread runs, it is abandoned."""
        if self._state != "running":
            return
        self._abandoned = True
        self._executors.abandoned += 1
        info = None if self._running is None else self._running.info
        _log.warning(
            "%s was cancelled while %s ran in a thread; the thread cannot be "
            "interrupted and is abandoned%s",
            "a call" if info is None else f"call {info.name} (id={info.id})",
            getattr(fn, "__qualname__", repr(fn)),
            "" if info is None else "; the call keeps its slots until the thread ends",
        )


class _Held:
    """trio-parallel's limiter for a run whose process slot the caller holds."""

    async def __aenter__(self) -> None:
        pass

    async def __aexit__(self, *exc: object) -> None:
        pass


_HELD: Final = _Held()


def _ready() -> None:
    """Nothing: run in a new worker process, so that it has started."""


def _run_call_in_process(
    module: str, qualname: str, info: CallInfo, payload: str
) -> tuple[str, str, bool] | None:
    """In a worker process: import the class, decode the payload, run the call.

    Returns None, or (the error's type name, its traceback text, whether it is one
    of the class's ``no_retry_on``): never the exception object, which may not
    survive the way back.
    """
    # Imported here: this runs in the worker process, which imports it on first use.
    from ._calllog import error_text
    from ._payload import decode_payload

    cls: Any = None
    try:
        cls = resolve_class(module, qualname)
        instance = cls(info)
        result = instance.run(decode_payload(cls.payload_type, payload))
        if inspect.iscoroutine(result):  # (as trio.to_thread checks for THREAD calls)
            result.close()
            raise TypeError(f"{qualname}.run returned a coroutine: it must be a plain def")
    except BaseException as exc:  # SystemExit too (sys.exit in run): the call's failure
        no_retry_on = () if cls is None else cls.no_retry_on
        return (
            f"{type(exc).__module__}.{type(exc).__qualname__}",
            error_text(exc),
            fails_for_good(exc, no_retry_on),
        )
    return None


def resolve_class(module: str, qualname: str) -> Any:
    """The ``FutureCall`` class at ``module``:``qualname`` (in a worker process)."""
    from ._call import FutureCall

    try:
        found: Any = importlib.import_module(module)
        for part in qualname.split("."):
            found = getattr(found, part)
    except Exception as exc:
        raise ImportError(
            f"the worker process cannot import the call class {module}:{qualname} "
            f"({type(exc).__name__}: {exc}); a PROCESS class must be importable "
            "(defined at module level, in a module the worker can import)"
        ) from exc
    if not (isinstance(found, type) and issubclass(found, FutureCall)):
        raise ImportError(f"{module}:{qualname} is not a FutureCall class in the worker process")
    return found
