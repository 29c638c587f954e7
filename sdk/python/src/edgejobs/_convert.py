"""Turns the API's JSON objects into the frozen dataclasses of `models` (and back for inputs).

One generic converter reads each dataclass's type hints, so a model is declared once, as a
plain dataclass, and the conversion of nested objects, lists, optional fields and
timestamps follows from its annotations. Fields the API adds later are kept in `raw` and
ignored otherwise, so an older client keeps working against a newer edge.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import sys
import typing
from typing import Any, Dict, Mapping, Type, TypeVar, Union

T = TypeVar("T")

_HINTS: Dict[type, Dict[str, Any]] = {}


def parse_time(text: str) -> _dt.datetime:
    """An RFC 3339 timestamp as an aware datetime (Python 3.9's parser needs `+00:00`, not `Z`)."""
    s = text.strip()
    if s.endswith(("Z", "z")):
        s = s[:-1] + "+00:00"
    # fromisoformat before 3.11 takes 3 or 6 fraction digits only: pad or cut to 6.
    head, sep, rest = s.partition(".")
    if sep:
        digits = ""
        while rest and rest[0].isdigit():
            digits, rest = digits + rest[0], rest[1:]
        s = f"{head}.{(digits + '000000')[:6]}{rest}"
    value = _dt.datetime.fromisoformat(s)
    if value.tzinfo is None:
        value = value.replace(tzinfo=_dt.timezone.utc)
    return value


def format_time(value: Union[str, _dt.datetime]) -> str:
    """A datetime as RFC 3339 in UTC with milliseconds; a string is passed on as it is."""
    if isinstance(value, str):
        return value
    if value.tzinfo is None:
        # A naive datetime is read as UTC rather than the machine's zone, which would make
        # the same code schedule differently on differently configured hosts.
        value = value.replace(tzinfo=_dt.timezone.utc)
    utc = value.astimezone(_dt.timezone.utc)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def _hints(cls: type) -> Dict[str, Any]:
    hints = _HINTS.get(cls)
    if hints is None:
        module = sys.modules[cls.__module__]
        hints = typing.get_type_hints(cls, vars(module))
        _HINTS[cls] = hints
    return hints


def _convert(tp: Any, value: Any) -> Any:
    if value is None:
        return None
    if tp is Any or tp is object:
        return value
    origin = typing.get_origin(tp)
    if origin is Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return _convert(args[0], value)
        return value
    if origin in (list, typing.List, tuple, typing.Tuple):
        (item,) = typing.get_args(tp)[:1] or (Any,)
        items = [_convert(item, v) for v in value]
        return tuple(items) if origin in (tuple, typing.Tuple) else items
    if origin in (dict, typing.Dict) or tp is dict:
        kv = typing.get_args(tp)
        inner = kv[1] if len(kv) == 2 else Any
        return {k: _convert(inner, v) for k, v in value.items()}
    if origin is typing.Literal:
        return value
    if tp is _dt.datetime:
        return parse_time(value) if isinstance(value, str) else value
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return from_json(tp, value)
    if tp is float and isinstance(value, int):
        return float(value)
    return value


def from_json(cls: Type[T], data: Mapping[str, Any]) -> T:
    """Builds dataclass `cls` from a decoded JSON object; raises TypeError on a non-object."""
    if not isinstance(data, Mapping):
        raise TypeError(f"{cls.__name__}: expected a JSON object, got {type(data).__name__}")
    hints = _hints(cls)
    kwargs: Dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name == "raw":
            kwargs["raw"] = dict(data)
            continue
        key = f.metadata.get("json", f.name)
        if key in data:
            kwargs[f.name] = _convert(hints[f.name], data[key])
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            # A required field the edge left out: the reply is not the documented object.
            raise TypeError(f"{cls.__name__}: the reply lacks the field {key!r}")
    return cls(**kwargs)


def to_json(value: Any) -> Any:
    """An input value (dataclass, datetime, list, dict) as JSON, leaving out None fields."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: Dict[str, Any] = {}
        for f in dataclasses.fields(value):
            v = getattr(value, f.name)
            if f.name == "raw" or v is None:
                continue
            if f.name == "extra":
                out.update({k: to_json(x) for k, x in v.items()})
                continue
            out[f.metadata.get("json", f.name)] = to_json(v)
        return out
    if isinstance(value, _dt.datetime):
        return format_time(value)
    if isinstance(value, Mapping):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    return value
