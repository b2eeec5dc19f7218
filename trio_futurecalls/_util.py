"""Small helpers shared by the engine and the stores."""

from __future__ import annotations

import inspect
import typing
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any, NoReturn

import trio


def leaves(group: BaseExceptionGroup[BaseException]) -> Iterable[BaseException]:
    """The non-group exceptions inside ``group``, depth first."""
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from leaves(exc)
        else:
            yield exc


def unwrap_group(
    group: BaseExceptionGroup[BaseException],
    body_exc: BaseException | None,
    wrap: Callable[[BaseException], BaseException],
) -> BaseException:
    """What a context manager owning a nursery should raise instead of ``group``.

    ``body_exc`` is what the ``async with`` block raised (if anything): it, or the
    members of a group it raised, pass through unchanged. ``KeyboardInterrupt`` and
    the like from our own tasks pass through too. Any other error from our own tasks
    becomes ``wrap(first_error)`` (the caller chains the group as its cause). Returns
    ``group`` itself when it holds nothing but ``Cancelled``.
    """
    mine = {id(body_exc)} if body_exc is not None else set()
    if isinstance(body_exc, BaseExceptionGroup):
        mine |= {id(e) for e in leaves(body_exc)}
    found = list(leaves(group))
    for leaf in found:
        if id(leaf) not in mine and not isinstance(leaf, Exception | trio.Cancelled):
            return leaf
    errors = [e for e in found if id(e) not in mine and not isinstance(e, trio.Cancelled)]
    if errors:
        return wrap(errors[0])
    if body_exc is not None:
        return body_exc
    return group


class BlockError:
    """What the ``async with`` block of a context manager raised (``exc``), recorded by
    :func:`background_nursery`, for :func:`raise_unwrapped`."""

    __slots__ = ("exc",)

    def __init__(self) -> None:
        self.exc: BaseException | None = None


@asynccontextmanager
async def background_nursery(block: BlockError) -> AsyncIterator[trio.Nursery]:
    """A nursery for a context manager's background tasks, around its ``yield``: what
    the block raises is recorded in ``block``, and the tasks are cancelled when the
    block ends. The caller unwraps the nursery's groups with :func:`raise_unwrapped`."""
    async with trio.open_nursery() as nursery:
        try:
            yield nursery
        except BaseException as exc:
            block.exc = exc
            raise
        finally:
            nursery.cancel_scope.cancel()


def raise_unwrapped(
    group: BaseExceptionGroup[BaseException],
    body_exc: BaseException | None,
    wrap: Callable[[BaseException], BaseException],
) -> NoReturn:
    """Raise what :func:`unwrap_group` picks instead of ``group``, chained sensibly.

    For the ``except BaseExceptionGroup`` of a context manager that owns a nursery:
    the block's own exception keeps its own cause; an exception that already has a
    cause (a translated driver error) keeps it; anything else is chained to ``group``.
    """
    replacement = unwrap_group(group, body_exc, wrap)
    if replacement is group:
        raise group
    if replacement is body_exc or replacement.__cause__ is not None:
        raise replacement from replacement.__cause__
    raise replacement from group


def fixup_module_metadata(module: str, namespace: Mapping[str, Any]) -> None:
    """Public names of ``module`` defined in its private submodules report ``module``
    as their home (``trio_futurecalls.StoreError``, not
    ``trio_futurecalls._errors.StoreError``) in reprs and tracebacks, as trio does.

    A class's own annotations are evaluated first, in the module that wrote them, so
    that ``typing.get_type_hints`` (attrs, cattrs...) still works on it afterwards.
    """
    for name, value in list(namespace.items()):
        if name.startswith("_") or not callable(value):
            continue
        home = getattr(value, "__module__", "")
        if not (isinstance(home, str) and home.startswith(f"{module}._")):
            continue
        own = inspect.get_annotations(value) if isinstance(value, type) else {}
        if own:
            hints = typing.get_type_hints(value, include_extras=True)
            value.__annotations__ = {key: hints[key] for key in own}
        value.__module__ = module
