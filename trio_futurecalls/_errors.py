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


class DuplicateCallError(InvalidArgumentError):
    """``schedule(..., unique_key=K, on_conflict="error")`` found a call with the same
    name and key pending (in the store, or earlier in the same batch). Nothing of the
    batch was stored. :attr:`call_id` is the pending call's id (None when the other
    call is an earlier request of the same batch, which was not stored either)."""

    def __init__(self, name: str, unique_key: str, call_id: int | None) -> None:
        where = (
            f"call {call_id} is pending"
            if call_id is not None
            else "an earlier call of the same batch has it"
        )
        super().__init__(f"a call named {name!r} with unique key {unique_key!r}: {where}")
        self.name = name
        self.unique_key = unique_key
        self.call_id = call_id

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.name, self.unique_key, self.call_id))


class PrerequisiteError(InvalidArgumentError):
    """``after=`` names a call the new call cannot wait for: :attr:`call_id` is not
    pending nor running where the store can see it (``failed`` False: it finished,
    was cancelled, started as an at-most-once call with no dependents, or never
    existed in this store), or it failed and is a dead letter (``failed`` True).
    Nothing of the batch was stored."""

    def __init__(self, call_id: int, failed: bool) -> None:
        if failed:
            why = "it failed and is a dead letter"
        else:
            why = (
                "it is not pending or running where the store can see it (it finished, "
                "was cancelled, started as an at-most-once call without dependents, or "
                "is not a call of this store)"
            )
        super().__init__(f"after: cannot wait for call {call_id}: {why}")
        self.call_id = call_id
        self.failed = failed

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.call_id, self.failed))


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


class StoreNotFoundError(StoreError):
    """A store opened without creating it (``migrate=False``) holds no trio_futurecalls
    schema: create it first (``futurecalls migrate``, or open with ``migrate=True``)."""


class StoreClosedError(StoreError):
    """The store was used outside its lifetime (before open or after close)."""


class NoDatabaseError(FutureCallsError, NotImplementedError):
    """A :class:`MemorySession` was asked to run SQL: the memory store has no database.

    Test a call's SQL on a SQLite store (``open_sqlite_store`` on a temporary file),
    whose session has the same methods as PostgreSQL's.
    """


class SchedulerError(FutureCallsError):
    """The scheduler itself failed; the cause is chained with ``from``."""


class SchedulerClosedError(SchedulerError):
    """The scheduler has shut down (or is shutting down) and takes no more work."""
