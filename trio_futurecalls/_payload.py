"""JSON payload codec: plain JSON values, or attrs classes converted to and from JSON.

Payloads are never pickled. A call class declares ``payload_type``:

* ``None`` (the default): any plain JSON value (``None``, ``bool``, ``int``, ``float``,
  ``str``, ``list`` and ``dict`` with ``str`` keys, nested).
* an attrs class: the payload must be an instance; it is stored as a JSON object and
  rebuilt into that class (fields may be JSON values, nested attrs classes, ``list[T]``,
  ``tuple[...]``, ``dict[str, T]``, ``T | None``, ``Any`` and aware ``datetime`` as
  ISO 8601 text; ``init=False`` fields are not stored). A payload is checked at the
  call site to decode back into its class, so a call never fails later for that.
"""

from __future__ import annotations

import json
import math
import types
import typing
from datetime import datetime
from typing import Any

import attrs

from ._errors import InvalidPayloadError, PayloadDecodeError
from ._validate import MAX_PAYLOAD_BYTES as MAX_PAYLOAD_BYTES
from ._validate import check_payload_text

#: Deepest nesting of lists, objects (and attrs instances) accepted in a payload. Far
#: below Python's recursion limit, so no payload can make encoding or decoding recurse
#: too deep; a stored payload nested deeper (written by another tool) is a dead letter.
MAX_PAYLOAD_DEPTH = 100

_dumps = json.JSONEncoder(allow_nan=False, separators=(",", ":"), ensure_ascii=False).encode


def check_payload_type(payload_type: object, where: str) -> None:
    """Raise unless ``payload_type`` is None or an attrs class."""
    if payload_type is not None and not (
        isinstance(payload_type, type) and attrs.has(payload_type)
    ):
        raise InvalidPayloadError(
            f"{where}.payload_type must be None (any JSON value) or an attrs class, "
            f"got {payload_type!r}"
        )


def encode_payload(payload_type: type[Any] | None, value: object) -> str:
    """Encode ``value`` as JSON text, checking it against ``payload_type``."""
    if value is None and payload_type is None:
        return "null"  # a call without payload: no walk, no encoder
    if payload_type is None:
        _check_json_value(value, "payload")
        data: object = value
    else:
        if not isinstance(value, payload_type):
            raise InvalidPayloadError(
                f"payload must be an instance of {payload_type.__qualname__}, "
                f"got {type(value).__name__}"
            )
        data = _unstructure(value, "payload")
    try:
        text = _dumps(data)
    except (TypeError, ValueError) as exc:
        raise InvalidPayloadError(f"payload is not JSON-serializable: {exc}") from None
    # Its size, and no lone surrogate (text no store can keep as UTF-8). The common
    # case, short ASCII JSON (which has no raw NUL: JSON escapes it), costs one test.
    if not (text.isascii() and len(text) <= MAX_PAYLOAD_BYTES):
        check_payload_text(text)
    if payload_type is not None:
        # Prove now that it will decode at run time (a wrongly typed field, an
        # unsupported annotation...), rather than fail every attempt later.
        try:
            _structure(data, payload_type, "payload")
        except Exception as exc:
            raise InvalidPayloadError(
                f"payload would not decode back into {payload_type.__qualname__}: {exc}"
            ) from None
    return text


def decode_payload(payload_type: type[Any] | None, text: str) -> Any:
    """Decode stored JSON text; raise :class:`PayloadDecodeError` when it no longer fits.

    Whatever a stored payload makes decoding raise (invalid JSON, a nesting that
    exhausts the recursion limit, a value no class accepts...) is a
    :class:`PayloadDecodeError`.
    """
    if text == "null":  # the commonest payload (None), without the parser's 0.8 us
        data = None
    else:
        try:
            data = json.loads(text)
        except (ValueError, TypeError) as exc:
            raise PayloadDecodeError(f"stored payload is not valid JSON: {exc}") from None
        except RecursionError:
            raise PayloadDecodeError(
                "stored payload is nested too deeply to decode "
                f"(the limit for new payloads is {MAX_PAYLOAD_DEPTH})"
            ) from None
    if payload_type is None:
        return data
    try:
        return _structure(data, payload_type, "payload")
    except Exception as exc:  # the class's own __init__/validators may raise anything
        raise PayloadDecodeError(
            f"stored payload does not decode into {payload_type.__qualname__}: "
            f"{type(exc).__name__}: {exc}"
        ) from None


def _too_deep(path: str) -> InvalidPayloadError:
    return InvalidPayloadError(
        f"payload is nested deeper than {MAX_PAYLOAD_DEPTH} levels (at {path[:200]}...)"
    )


def _check_json_value(value: object, path: str, depth: int = 0) -> None:
    # An explicit walk: json.dumps would quietly turn tuples into lists and accept
    # subclasses with custom behaviour; both break the round trip. The depth limit
    # also ends the walk of a list that contains itself.
    if value is None or type(value) in (str, bool, int):
        return
    if type(value) is float:
        if not math.isfinite(value):
            raise InvalidPayloadError(f"{path} is {value!r}, which JSON cannot represent")
        return
    if type(value) is list:
        if depth >= MAX_PAYLOAD_DEPTH:
            raise _too_deep(path)
        for i, item in enumerate(value):
            _check_json_value(item, f"{path}[{i}]", depth + 1)
        return
    if type(value) is dict:
        if depth >= MAX_PAYLOAD_DEPTH:
            raise _too_deep(path)
        for key, item in value.items():
            if type(key) is not str:
                raise InvalidPayloadError(f"{path} has a non-str key {key!r}")
            _check_json_value(item, f"{path}[{key!r}]", depth + 1)
        return
    raise InvalidPayloadError(
        f"{path} is a {type(value).__name__}, which is not a plain JSON value "
        "(use None, bool, int, float, str, list, dict, or declare an attrs payload_type)"
    )


def _unstructure(value: object, path: str, depth: int = 0) -> object:
    cls = type(value)
    nested = attrs.has(cls) or cls in (list, tuple, dict)
    if nested and depth >= MAX_PAYLOAD_DEPTH:
        raise _too_deep(path)
    if attrs.has(cls):
        return {
            field.name: _unstructure(getattr(value, field.name), f"{path}.{field.name}", depth + 1)
            for field in attrs.fields(cls)
            if field.init  # init=False fields are derived, not payload
        }
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise InvalidPayloadError(f"{path} is a naive datetime; use an aware one")
        return value.isoformat()
    if type(value) is list or type(value) is tuple:
        return [_unstructure(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value)]
    if type(value) is dict:
        out = {}
        for key, item in value.items():
            if type(key) is not str:
                raise InvalidPayloadError(f"{path} has a non-str key {key!r}")
            out[key] = _unstructure(item, f"{path}[{key!r}]", depth + 1)
        return out
    _check_json_value(value, path, depth)
    return value


def _structure(data: object, tp: Any, path: str) -> Any:
    if tp is Any or tp is object:
        return data
    if tp is None or tp is type(None):
        if data is not None:
            raise TypeError(f"{path}: expected null, got {type(data).__name__}")
        return None
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        errors = []
        for option in typing.get_args(tp):
            try:
                return _structure(data, option, path)
            except (TypeError, ValueError) as exc:
                errors.append(str(exc))
        raise TypeError(f"{path}: matches no option of {tp}: {'; '.join(errors)}")
    if origin is list:
        (item_tp,) = typing.get_args(tp) or (Any,)
        if type(data) is not list:
            raise TypeError(f"{path}: expected a list, got {type(data).__name__}")
        return [_structure(item, item_tp, f"{path}[{i}]") for i, item in enumerate(data)]
    if origin is dict:
        args = typing.get_args(tp)
        value_tp = args[1] if args else Any
        if type(data) is not dict:
            raise TypeError(f"{path}: expected an object, got {type(data).__name__}")
        return {k: _structure(v, value_tp, f"{path}[{k!r}]") for k, v in data.items()}
    if origin is tuple:
        args = typing.get_args(tp)
        if type(data) is not list:
            raise TypeError(f"{path}: expected a list, got {type(data).__name__}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_structure(item, args[0], f"{path}[{i}]") for i, item in enumerate(data))
        if len(args) != len(data):
            raise TypeError(f"{path}: expected {len(args)} items, got {len(data)}")
        return tuple(
            _structure(item, item_tp, f"{path}[{i}]")
            for i, (item, item_tp) in enumerate(zip(data, args, strict=True))
        )
    if tp is list or tp is dict:
        return _structure(data, tp[Any], path)
    if isinstance(tp, type) and attrs.has(tp):
        if type(data) is not dict:
            raise TypeError(f"{path}: expected an object for {tp.__qualname__}")
        hints = _hints(tp)
        kwargs = {}
        known = set()
        for field in attrs.fields(tp):
            if not field.init:
                continue
            known.add(field.name)
            if field.name not in data:
                if field.default is attrs.NOTHING:
                    raise TypeError(f"{path}: missing field {field.name!r}")
                continue
            key = field.alias if field.alias is not None else field.name
            kwargs[key] = _structure(
                data[field.name], hints.get(field.name, Any), f"{path}.{field.name}"
            )
        extra = set(data) - known
        if extra:
            raise TypeError(f"{path}: unknown fields {sorted(extra)}")
        return tp(**kwargs)
    if tp is datetime:
        if type(data) is not str:
            raise TypeError(f"{path}: expected an ISO 8601 string")
        value = datetime.fromisoformat(data)
        if value.tzinfo is None:
            raise ValueError(f"{path}: naive datetime {data!r}")
        return value
    if tp is float:
        if type(data) not in (int, float):
            raise TypeError(f"{path}: expected a number, got {type(data).__name__}")
        return float(data)  # type: ignore[arg-type]
    if tp in (str, int, bool):
        if type(data) is not tp:
            raise TypeError(f"{path}: expected {tp.__name__}, got {type(data).__name__}")
        return data
    raise TypeError(f"{path}: unsupported field type {tp!r}")


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    hints = _HINTS.get(cls)
    if hints is None:
        try:
            hints = typing.get_type_hints(cls)
        except Exception:
            hints = {f.name: f.type if f.type is not None else Any for f in attrs.fields(cls)}
        _HINTS[cls] = hints
    return hints
