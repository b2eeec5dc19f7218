"""trio_futurecalls: persisted future calls for Trio, run in parallel under limits.

The public API is this list; everything else lives in private modules. The
PostgreSQL store's names (``open_postgres_store``, ``PostgresStore``,
``PostgresSession``) are imported on first use, so that ``import trio_futurecalls``
never imports asyncpg or trio-asyncio (the ``postgres`` extra).
"""

from typing import TYPE_CHECKING

from ._adaptive import Adaptive as Adaptive
from ._admin import CallRequest as CallRequest
from ._admin import list_pending as list_pending
from ._admin import queue_lengths as queue_lengths
from ._admin import schedule_call as schedule_call
from ._admin import schedule_chain as schedule_chain
from ._admin import schedule_many as schedule_many
from ._call import FutureCall as FutureCall
from ._cancel_model import CancelOutcome as CancelOutcome
from ._cluster_limits import ALL_CLASSES as ALL_CLASSES
from ._cluster_limits import ClusterLimit as ClusterLimit
from ._cluster_limits import RateLimit as RateLimit
from ._errors import DuplicateCallError as DuplicateCallError
from ._errors import FutureCallsError as FutureCallsError
from ._errors import InvalidArgumentError as InvalidArgumentError
from ._errors import InvalidPayloadError as InvalidPayloadError
from ._errors import NoDatabaseError as NoDatabaseError
from ._errors import PayloadDecodeError as PayloadDecodeError
from ._errors import PrerequisiteError as PrerequisiteError
from ._errors import SchedulerClosedError as SchedulerClosedError
from ._errors import SchedulerError as SchedulerError
from ._errors import StoreClosedError as StoreClosedError
from ._errors import StoreError as StoreError
from ._errors import StoreNotFoundError as StoreNotFoundError
from ._errors import StoreUnavailableError as StoreUnavailableError
from ._errors import UnregisteredCallError as UnregisteredCallError
from ._executors import Executor as Executor
from ._executors import ExecutorStatistics as ExecutorStatistics
from ._executors import ProcessCallError as ProcessCallError
from ._model import CallInfo as CallInfo
from ._model import Claim as Claim
from ._model import DeadLetter as DeadLetter
from ._model import Lease as Lease
from ._model import NewCall as NewCall
from ._model import OnConflict as OnConflict
from ._model import RecurringFire as RecurringFire
from ._model import RecurringInfo as RecurringInfo
from ._model import StoredCall as StoredCall
from ._model import WorkerInfo as WorkerInfo
from ._open_store import open_store as open_store
from ._options import DEFAULT_GRACE_PERIOD as DEFAULT_GRACE_PERIOD
from ._options import DEFAULT_LEASE_DURATION as DEFAULT_LEASE_DURATION
from ._options import DEFAULT_MAX_CONCURRENT as DEFAULT_MAX_CONCURRENT
from ._options import DEFAULT_WORKER_TIMEOUT as DEFAULT_WORKER_TIMEOUT
from ._options import ENV_MAX_CONCURRENT as ENV_MAX_CONCURRENT
from ._options import SchedulerKeywords as SchedulerKeywords
from ._options import SchedulerOptions as SchedulerOptions
from ._payload import MAX_PAYLOAD_DEPTH as MAX_PAYLOAD_DEPTH
from ._recurrence import MAX_CATCH_UP as MAX_CATCH_UP
from ._recurrence import MISFIRE_GRACE as MISFIRE_GRACE
from ._recurring import cancel_recurring as cancel_recurring
from ._recurring import list_recurring as list_recurring
from ._recurring import schedule_recurring as schedule_recurring
from ._retry import Backoff as Backoff
from ._retry import Delivery as Delivery
from ._retry import ExponentialBackoff as ExponentialBackoff
from ._retry import FixedBackoff as FixedBackoff
from ._scheduler import Scheduler as Scheduler
from ._scheduler import open_scheduler as open_scheduler
from ._scheduler import run_due_calls as run_due_calls
from ._session import Session as Session
from ._stats import BUCKETS as BUCKETS
from ._stats import ClassStatistics as ClassStatistics
from ._stats import Distribution as Distribution
from ._stats import QueueLength as QueueLength
from ._stats import SchedulerStatistics as SchedulerStatistics
from ._store import PendingQuery as PendingQuery
from ._store import PoolSizeCheck as PoolSizeCheck
from ._store import Store as Store
from ._util import fixup_module_metadata as _fixup_module_metadata
from ._validate import EARLIEST_TIME as EARLIEST_TIME
from ._validate import LATEST_TIME as LATEST_TIME
from ._validate import MAX_ATTEMPTS as MAX_ATTEMPTS
from ._validate import MAX_DELAY as MAX_DELAY
from ._validate import MAX_IDENTIFIER_LENGTH as MAX_IDENTIFIER_LENGTH
from ._validate import MAX_NAME_LENGTH as MAX_NAME_LENGTH
from ._validate import MAX_PAYLOAD_BYTES as MAX_PAYLOAD_BYTES
from ._validate import MAX_PRIORITY as MAX_PRIORITY
from ._validate import MIN_PRIORITY as MIN_PRIORITY
from ._validate_dependencies import MAX_PREREQUISITES as MAX_PREREQUISITES
from ._version import __version__ as __version__
from .stores.memory import MemorySession as MemorySession
from .stores.memory import MemoryStore as MemoryStore
from .stores.sqlite import SQLiteSession as SQLiteSession
from .stores.sqlite import SQLiteStore as SQLiteStore
from .stores.sqlite import open_sqlite_store as open_sqlite_store

if TYPE_CHECKING:
    from .stores.postgres import PostgresSession as PostgresSession
    from .stores.postgres import PostgresStore as PostgresStore
    from .stores.postgres import open_postgres_store as open_postgres_store

#: Names of ``trio_futurecalls.stores.postgres`` also found here, imported on first use.
_LAZY = ("PostgresSession", "PostgresStore", "open_postgres_store")


def __getattr__(name: str) -> object:
    # Only for the names above, on first use: without the extra, the ImportError
    # names it (pip install 'trio_futurecalls[postgres]').
    if name in _LAZY:
        from .stores import postgres

        value = getattr(postgres, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


_fixup_module_metadata(__name__, globals())
del _fixup_module_metadata
