"""The JSON payload codec: plain JSON values and attrs classes, never pickle."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import attrs
import pytest

from trio_futurecalls import InvalidPayloadError, PayloadDecodeError
from trio_futurecalls._payload import decode_payload, encode_payload


@attrs.frozen
class Inner:
    when: datetime
    tags: list[str] = attrs.Factory(list)


@attrs.frozen
class Outer:
    id: int
    ratio: float
    inner: Inner
    extra: dict[str, int] | None = None
    anything: Any = None


def test_plain_json_round_trip() -> None:
    value = {"a": [1, 2.5, None, True, "é"], "b": {"c": []}}
    assert decode_payload(None, encode_payload(None, value)) == value


def test_nested_attrs_round_trip() -> None:
    zone = timezone(timedelta(hours=-3))
    value = Outer(
        7, 1.0, Inner(datetime(2030, 5, 6, 7, 8, tzinfo=zone), ["x"]), {"k": 1}, [1, {"z": 2}]
    )
    text = encode_payload(Outer, value)
    assert '"when":"2030-05-06T07:08:00-03:00"' in text
    assert decode_payload(Outer, text) == value


def test_ints_are_accepted_for_float_fields() -> None:
    decoded = decode_payload(Outer, '{"id":1,"ratio":2,"inner":{"when":"2030-01-01T00:00:00Z"}}')
    assert decoded == Outer(1, 2.0, Inner(datetime(2030, 1, 1, tzinfo=UTC)))
    assert isinstance(decoded.ratio, float)


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        '{"id":"1","ratio":1,"inner":{"when":"2030-01-01T00:00:00Z"}}',
        '{"id":1,"ratio":1}',
        '{"id":1,"ratio":1,"inner":{"when":"2030-01-01T00:00:00"}}',
        '{"id":1,"ratio":1,"inner":{"when":"2030-01-01T00:00:00Z"},"surprise":1}',
        '{"id":1,"ratio":1,"inner":{"when":"2030-01-01T00:00:00Z","tags":[1]}}',
        "[1]",
    ],
)
def test_stored_payloads_that_no_longer_fit_raise_decode_errors(text: str) -> None:
    with pytest.raises(PayloadDecodeError):
        decode_payload(Outer, text)


def test_naive_datetime_inside_attrs_payload_is_rejected() -> None:
    with pytest.raises(InvalidPayloadError, match="naive"):
        encode_payload(Inner, Inner(datetime(2030, 1, 1)))


def test_bool_is_not_an_int() -> None:
    with pytest.raises(PayloadDecodeError):
        decode_payload(Outer, '{"id":true,"ratio":1,"inner":{"when":"2030-01-01T00:00:00Z"}}')
