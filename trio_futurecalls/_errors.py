"""The library's exception hierarchy.

Every error the library raises on purpose derives from :class:`FutureCallsError`.
Driver exceptions (``sqlite3``, ``asyncpg``) are translated at the store edge and
never reach users raw.
"""

from __future__ import annotations


class FutureCallsError(Exception):
    """Base class of every error raised by trio_futurecalls."""


class InvalidArgumentError(FutureCallsError, ValueError):
    """Bad input found at the call site (naive datetime, bad delay, bad name...)."""


class InvalidPayloadError(InvalidArgumentError):
    """A payload is not JSON, is too large, or does not match the declared type."""


class UnregisteredCallError(InvalidArgumentError):
    """A call class is not a ``FutureCall`` subclass or is not registered here."""


class PayloadDecodeError(FutureCallsError):
    """A stored payload no longer decodes into the call class's payload type."""


class StoreError(FutureCallsError):
    """A store operation failed."""


class StoreUnavailableError(StoreError):
    """The store cannot be reached right now (database down, connection lost).

    Raised by ``schedule`` and friends during an outage; the dispatcher logs it,
    backs off and retries on its own.
    """


class StoreClosedError(StoreError):
    """The store was used outside its lifetime (before open or after close)."""


class SchedulerError(FutureCallsError):
    """The scheduler itself failed; the cause is chained with ``from``."""


class SchedulerClosedError(SchedulerError):
    """The scheduler has shut down (or is shutting down) and takes no more work."""
