"""JSON encoding of the core types, for what the store keeps (deferred requests and results)."""

from __future__ import annotations

import base64
import dataclasses
import enum
import json
from typing import Any

from localxai import chat

_TYPES: dict[str, type] = {
    name: obj
    for name, obj in vars(chat).items()
    if isinstance(obj, type) and (dataclasses.is_dataclass(obj) or issubclass(obj, enum.Enum))
}


def _encode(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return {"__enum__": type(value).__name__, "value": value.value}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return {"__type__": type(value).__name__, **fields}
    if isinstance(value, bytes):
        return {"__bytes__": base64.b64encode(value).decode()}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_decode(v) for v in value)  # the core types use tuples for sequences
    if not isinstance(value, dict):
        return value
    if "__enum__" in value:
        return _TYPES[value["__enum__"]](value["value"])
    if "__bytes__" in value:
        return base64.b64decode(value["__bytes__"])
    if "__type__" in value:
        cls = _TYPES[value["__type__"]]
        return cls(**{k: _decode(v) for k, v in value.items() if k != "__type__"})
    return {k: _decode(v) for k, v in value.items()}


def dumps(value: Any) -> str:
    return json.dumps(_encode(value), separators=(",", ":"))


def loads(text: str) -> Any:
    return _decode(json.loads(text))
