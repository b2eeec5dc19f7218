"""How the PostgreSQL store classifies driver errors: by type and SQLSTATE, never by text.

No server: asyncpg exceptions are built here, as asyncpg builds them.
"""

from __future__ import annotations

import inspect
from typing import Any

import asyncpg.exceptions as pgexc
import pytest
import trio_asyncio

from trio_futurecalls import StoreError, StoreUnavailableError
from trio_futurecalls.stores.postgres._errors import (
    ConnectionGone,
    Unreadable,
    bridge,
    is_unavailable,
    lost,
    on_connection,
    raise_if_gone,
    translate,
)


def server_error(sqlstate: str, message: str = "boom") -> pgexc.PostgresError:
    """An error as asyncpg makes it from the server's fields."""
    return pgexc.PostgresError.new({"C": sqlstate, "M": message, "S": "ERROR"})


def test_sqlstate_classes_are_asyncpgs_connection_resource_and_operator_errors() -> None:
    outage_types = (
        pgexc.PostgresConnectionError,
        pgexc.InsufficientResourcesError,
        pgexc.OperatorInterventionError,
    )
    classes = [
        cls
        for _, cls in inspect.getmembers(pgexc, inspect.isclass)
        if issubclass(cls, pgexc.PostgresError) and getattr(cls, "sqlstate", None)
    ]
    assert len(classes) > 200
    for cls in classes:
        assert is_unavailable(cls("boom")) == issubclass(cls, outage_types), cls


@pytest.mark.parametrize(
    "exc",
    [
        pgexc.TooManyConnectionsError("sorry, too many clients already"),
        pgexc.AdminShutdownError("terminating connection due to administrator command"),
        pgexc.CannotConnectNowError("the database system is starting up"),
        pgexc.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        pgexc.ConnectionFailureError("x"),
        pgexc.QueryCanceledError("canceling statement due to statement timeout"),
        pgexc.DiskFullError("x"),
        server_error("53300"),
        ConnectionRefusedError(111, "Connection refused"),
        ConnectionResetError(104, "Connection reset by peer"),
        OSError("Name or service not known"),
        TimeoutError(),
        # The connection's protocol state is broken (the server closed it and asyncpg
        # had read the error but not the end of the stream): it is unusable.
        pgexc.InternalClientError(
            "cannot switch to state 12; another operation (2) is in progress"
        ),
        pgexc.ProtocolError("unexpected message"),
    ],
    ids=repr,
)
def test_outages(exc: BaseException) -> None:
    assert is_unavailable(exc)
    assert isinstance(translate(exc, "claim"), StoreUnavailableError)


@pytest.mark.parametrize(
    "exc",
    [
        pgexc.UniqueViolationError("duplicate key value violates unique constraint"),
        pgexc.CheckViolationError("new row violates check constraint"),
        pgexc.UndefinedTableError('relation "calls" does not exist'),
        pgexc.SerializationError("could not serialize access"),
        pgexc.DeadlockDetectedError("deadlock detected"),
        server_error("23505"),
        # A cached statement outlived a schema change: about the statement, not the
        # connection.
        pgexc.OutdatedSchemaCacheError("cached statement plan is invalid"),
    ],
    ids=repr,
)
def test_other_errors(exc: BaseException) -> None:
    assert not is_unavailable(exc)
    error = translate(exc, "claim")
    assert type(error) is StoreError


def test_sqlstate_codes_asyncpg_does_not_know_are_classified_by_their_class() -> None:
    unknown = server_error("08P99", "some future connection error")
    assert type(unknown) is pgexc.UnknownPostgresError
    assert is_unavailable(unknown)
    assert not is_unavailable(server_error("XX999"))


def test_message_text_never_decides() -> None:
    # Words that the old text rules looked for, on errors that are not outages...
    for exc in (
        pgexc.InterfaceError("connection is closed"),
        pgexc.InterfaceError("pool is closing"),
        pgexc.DataError("invalid input for query argument $1: 'closed'"),
        pgexc.UniqueViolationError("too many connections; connection closed"),
    ):
        assert type(translate(exc, "x")) is StoreError, exc
    # ...and outages whose text says nothing.
    assert isinstance(translate(pgexc.TooManyConnectionsError(""), "x"), StoreUnavailableError)


def test_translate_names_what_and_the_driver_error() -> None:
    error = translate(pgexc.TooManyConnectionsError("too many"), "claim")
    assert str(error) == "PostgreSQL unavailable (claim): TooManyConnectionsError: too many"
    error = translate(pgexc.UniqueViolationError("dup"), "schedule")
    assert str(error) == "PostgreSQL error (schedule): UniqueViolationError: dup"
    gone = translate(pgexc.InterfaceError("whatever"), "fetch", gone=True)
    assert str(gone) == "PostgreSQL unavailable (fetch): InterfaceError: whatever"


def test_interface_errors_are_outages_only_when_the_connection_is_gone() -> None:
    error = pgexc.InterfaceError("anything")
    raise_if_gone(error, gone=False)  # returns: the caller re-raises the original
    with pytest.raises(ConnectionGone) as info:
        raise_if_gone(error, gone=True)
    assert info.value.error is error
    for misuse in (
        pgexc.DataError("bad argument"),
        pgexc.ClientConfigurationError("bad option"),
        pgexc.UnsupportedClientFeatureError("no"),
        pgexc.UnsupportedServerFeatureError("no"),
    ):
        raise_if_gone(misuse, gone=True)  # about the request, whatever the connection
    raise_if_gone(pgexc.TooManyConnectionsError("x"), gone=True)  # not an InterfaceError


class FakeConnection:
    """What ``lost`` reads: ``is_closed()``, which a detached pool proxy makes raise."""

    def __init__(self, state: str) -> None:
        self.state = state

    def terminate(self) -> None:
        self.state = "closed"

    def is_closed(self) -> bool:
        if self.state == "detached":
            raise pgexc.InterfaceError("cannot call Connection.is_closed()")
        return self.state == "closed"


def test_lost() -> None:
    assert not lost(FakeConnection("open"))  # type: ignore[arg-type]
    assert lost(FakeConnection("closed"))  # type: ignore[arg-type]
    assert lost(FakeConnection("detached"))  # type: ignore[arg-type]


async def test_on_connection_turns_interface_errors_of_lost_connections_into_gone() -> None:
    error = pgexc.InterfaceError("x")

    async def fail() -> None:
        raise error

    async def ok(value: int) -> int:
        return value

    conn: Any = FakeConnection("open")
    assert await on_connection(conn, ok, 3) == 3
    with pytest.raises(pgexc.InterfaceError) as raw:
        await on_connection(conn, fail)
    assert raw.value is error
    conn.state = "detached"
    with pytest.raises(ConnectionGone) as gone:
        await on_connection(conn, fail)
    assert gone.value.error is error


async def test_on_connection_terminates_a_connection_an_internal_client_error_broke() -> None:
    broken = pgexc.InternalClientError("cannot switch to state 12; another operation (2)")

    async def fail(exc: BaseException) -> None:
        raise exc

    conn: Any = FakeConnection("open")
    with pytest.raises(ConnectionGone) as gone:
        await on_connection(conn, fail, broken)
    assert gone.value.error is broken
    assert conn.state == "closed"  # so that the pool replaces it
    conn = FakeConnection("open")
    outdated = pgexc.OutdatedSchemaCacheError("cached statement plan is invalid")
    with pytest.raises(pgexc.OutdatedSchemaCacheError):
        await on_connection(conn, fail, outdated)
    assert conn.state == "open"


@pytest.mark.parametrize(
    "exc", [OverflowError("date value out of range"), ValueError("year 0 is out of range")]
)
async def test_values_asyncpg_cannot_convert_are_store_errors(exc: Exception) -> None:
    async def fail() -> None:
        raise exc

    conn: Any = FakeConnection("open")
    with pytest.raises(Unreadable) as unreadable:
        await on_connection(conn, fail)
    assert unreadable.value.error is exc
    assert conn.state == "open"  # the statement completed: the connection is fine
    async with trio_asyncio.open_loop() as loop:
        with pytest.raises(StoreError) as error:
            await bridge(loop, "pending", on_connection, conn, fail)
    assert type(error.value) is StoreError
    assert error.value.__cause__ is exc
    assert "Python cannot hold (pending)" in str(error.value)


async def test_bridge_translates_and_chains_the_driver_error() -> None:
    interface = pgexc.InterfaceError("x")
    too_many = pgexc.TooManyConnectionsError("too many")
    unique = pgexc.UniqueViolationError("dup")

    async def raising(exc: BaseException) -> None:
        raise exc

    async with trio_asyncio.open_loop() as loop:
        with pytest.raises(StoreUnavailableError) as gone:
            await bridge(loop, "fetch", raising, ConnectionGone(interface))
        assert gone.value.__cause__ is interface
        with pytest.raises(StoreUnavailableError) as outage:
            await bridge(loop, "claim", raising, too_many)
        assert outage.value.__cause__ is too_many
        with pytest.raises(StoreError) as other:
            await bridge(loop, "schedule", raising, unique)
        assert type(other.value) is StoreError
        assert other.value.__cause__ is unique
        mine = StoreError("already translated")
        with pytest.raises(StoreError) as passed:
            await bridge(loop, "migrate", raising, mine)
        assert passed.value is mine
        with pytest.raises(KeyError):  # not a driver error: a bug, raised as it is
            await bridge(loop, "x", raising, KeyError("k"))
        assert await bridge(loop, "x", echo, 5) == 5


async def echo(value: int) -> int:
    return value
