"""A PROCESS class whose run is inherited from a mixin as ``async def``: importing
this module must fail (the class is refused when defined)."""

from __future__ import annotations

from typing import Any

from trio_futurecalls import Executor, FutureCall


class AsyncRunMixin:
    async def run(self, payload: Any) -> None:
        raise AssertionError("never runs: the worker drops the coroutine")


class InheritsAsyncRun(AsyncRunMixin, FutureCall):  # type: ignore[misc]
    name = "inherits-async-run"
    executor = Executor.PROCESS
