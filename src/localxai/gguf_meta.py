"""What `localxai models` shows about a GGUF file, read from its header alone (no weights are loaded).

A GGUF file starts with its key/value metadata; this reads those keys, skipping the large arrays
(the tokenizer's vocabulary) without decoding them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

# llama.h's llama_ftype: the quantisation a file was made with (general.file_type).
FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S",
    12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K",
    19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL",
    26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0",
    37: "TQ2_0", 38: "MXFP4_MOE", 39: "NVFP4", 40: "Q1_0", 41: "Q2_0",
}  # fmt: skip
# GGUF value types: struct format of the scalars; 8 is a string, 9 an array.
SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
STRING, ARRAY = 8, 9
MAX_KEYS = 1 << 20
MAX_DEPTH = 8  # arrays of arrays: real files nest one deep; a crafted one could nest until RecursionError


class NotGGUF(ValueError):
    """The file is not a GGUF file, or its header is cut short or malformed."""


@dataclass(frozen=True)
class GGUFInfo:
    architecture: str
    name: str | None
    quantization: str | None
    context_length: int | None
    chat_template: bool
    vision_projector: bool  # an mmproj file (clip.has_vision_encoder)


def read_info(path: Path) -> GGUFInfo:
    meta = read_metadata(path)
    arch = str(meta.get("general.architecture", ""))
    file_type = meta.get("general.file_type")
    context = meta.get(f"{arch}.context_length")
    return GGUFInfo(
        architecture=arch,
        name=str(meta["general.name"]) if "general.name" in meta else None,
        quantization=FILE_TYPES.get(file_type) if isinstance(file_type, int) else None,
        context_length=context if isinstance(context, int) else None,
        chat_template=bool(meta.get("tokenizer.chat_template")),
        vision_projector=bool(meta.get("clip.has_vision_encoder")),
    )


def read_metadata(path: Path) -> dict[str, object]:
    """The header's keys and values; arrays are replaced by their length (nothing here needs them)."""
    with path.open("rb") as f:
        try:
            return _read(f)
        except (struct.error, UnicodeDecodeError, OverflowError, MemoryError) as exc:
            raise NotGGUF(f"{path}: malformed GGUF header ({exc})") from None


def _read(f: BinaryIO) -> dict[str, object]:
    if f.read(4) != b"GGUF":
        raise NotGGUF(f"{f.name}: not a GGUF file")
    (version,) = _unpack(f, "I")
    if version < 2:
        raise NotGGUF(f"{f.name}: GGUF version {version} is too old")
    _tensors, count = _unpack(f, "QQ")
    if count > MAX_KEYS:
        raise NotGGUF(f"{f.name}: {count} metadata keys")
    out: dict[str, object] = {}
    for _ in range(count):
        key = _string(f)
        (kind,) = _unpack(f, "I")
        out[key] = _value(f, kind)
    return out


def _value(f: BinaryIO, kind: int, keep: bool = True, depth: int = 0) -> object:
    if kind in SCALARS:
        return _unpack(f, SCALARS[kind])[0]
    if kind == STRING:
        return _string(f) if keep else _skip_string(f)
    if kind == ARRAY:
        item, n = _unpack(f, "IQ")
        if depth >= MAX_DEPTH:
            raise NotGGUF(f"{f.name}: metadata arrays nested more than {MAX_DEPTH} deep")
        if item in SCALARS:
            f.seek(n * struct.calcsize("<" + SCALARS[item]), 1)
        else:
            for _ in range(n):
                _value(f, item, keep=False, depth=depth + 1)
        return n
    raise NotGGUF(f"{f.name}: unknown metadata type {kind}")


def _unpack(f: BinaryIO, fmt: str) -> tuple[int, ...]:
    size = struct.calcsize("<" + fmt)
    data = f.read(size)
    if len(data) != size:
        raise NotGGUF(f"{f.name}: header cut short")
    return struct.unpack("<" + fmt, data)


def _string(f: BinaryIO) -> str:
    (n,) = _unpack(f, "Q")
    data = f.read(n)
    if len(data) != n:
        raise NotGGUF(f"{f.name}: header cut short")
    return data.decode()


def _skip_string(f: BinaryIO) -> bool:
    (n,) = _unpack(f, "Q")
    f.seek(n, 1)
    return n > 0
