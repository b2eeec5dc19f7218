"""The ``FutureCall`` base class that users subclass to declare a kind of call."""

from __future__ import annotations

from typing import Any, ClassVar

from ._errors import InvalidArgumentError, UnregisteredCallError
from ._model import CallInfo
from ._payload import check_payload_type
from ._validate import check_limit, check_name


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
    #: How many calls of this class may run at once in one scheduler; None = unlimited.
    max_concurrent: ClassVar[int | None] = 1
    #: None for any JSON value, or an attrs class that payloads are converted to/from.
    payload_type: ClassVar[type[Any] | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Validate what the class body set, so mistakes surface at import time.
        if "name" in cls.__dict__:
            check_name(cls.__dict__["name"])
        if "max_concurrent" in cls.__dict__:
            check_limit(cls.__dict__["max_concurrent"], f"{cls.__qualname__}.max_concurrent")
        if "payload_type" in cls.__dict__:
            check_payload_type(cls.__dict__["payload_type"], cls.__qualname__)

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


def check_call_class(cls: object) -> type[FutureCall]:
    """Return ``cls`` if it is a usable ``FutureCall`` subclass, else raise."""
    if not (isinstance(cls, type) and issubclass(cls, FutureCall)) or cls is FutureCall:
        raise UnregisteredCallError(f"{cls!r} is not a FutureCall subclass")
    if not isinstance(getattr(cls, "name", None), str):
        raise UnregisteredCallError(f"{cls.__qualname__} has no `name` class attribute")
    check_name(cls.name)
    if cls.invoke is FutureCall.invoke:
        raise UnregisteredCallError(f"{cls.__qualname__} does not implement invoke()")
    return cls


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
