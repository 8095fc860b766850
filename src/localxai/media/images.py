"""Image inputs: data URLs and http(s) URLs, checked before any engine sees them.

JPEG and PNG only, decided by the bytes (magic numbers), not by the declared type; at most 20 MiB
each (decoded); decodable, and not a decompression bomb. Errors name the image by its position in
the request.

What an image costs follows xAI's rule, whatever the model does with it: the image is cut into
448x448 tiles, each worth 256 tokens, plus one extra tile (the overview), at most 6 tiles. `low`
detail is the overview alone; `auto` is `low` for an image that fits one tile, else `high`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import io
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

from PIL import Image, ImageOps

from localxai.chat import Detail, ImagePart
from localxai.media.fetch import MAX_IMAGE_BYTES, FetchPolicy, ImageFetchError, fetch_image

MAX_PIXELS = 50_000_000  # decompression-bomb cap (a 20 MiB PNG can claim billions of pixels)
MAGIC = {b"\x89PNG\r\n\x1a\n": "image/png", b"\xff\xd8\xff": "image/jpeg"}
TILE = 448
TOKENS_PER_TILE = 256
MAX_TILES = 6


def resolved_detail(width: int, height: int, detail: Detail) -> Detail:
    """`auto` decided by size: an image within one tile gains nothing from tiling."""
    if detail is Detail.AUTO:
        return Detail.LOW if width <= TILE and height <= TILE else Detail.HIGH
    return detail


def image_tokens(width: int, height: int, detail: Detail) -> int:
    """xAI's price of one image in prompt tokens: 256 to 1,792."""
    if resolved_detail(width, height, detail) is Detail.LOW:
        return TOKENS_PER_TILE
    tiles = min(MAX_TILES, math.ceil(width / TILE) * math.ceil(height / TILE))
    return (tiles + 1) * TOKENS_PER_TILE


@dataclass(frozen=True)
class LoadedImage:
    data: bytes
    mime: str
    width: int
    height: int
    detail: Detail

    @property
    def tokens(self) -> int:
        return image_tokens(self.width, self.height, self.detail)

    @property
    def low_detail(self) -> bool:
        return resolved_detail(self.width, self.height, self.detail) is Detail.LOW

    @cached_property
    def digest(self) -> str:
        """What the image is, for caches: its bytes and the resolution the model sees."""
        return hashlib.sha256(self.data).hexdigest() + (":low" if self.low_detail else ":high")

    def pixels(self) -> tuple[int, int, bytes]:
        """(width, height, RGB bytes) as the model sees it: upright, and within one tile at low detail."""
        with Image.open(io.BytesIO(self.data)) as opened:
            image = ImageOps.exif_transpose(opened).convert("RGB")
        if self.low_detail:
            image.thumbnail((TILE, TILE))
        return image.width, image.height, image.tobytes()

    @property
    def data_url(self) -> str:
        return f"data:{self.mime};base64,{base64.b64encode(self.data).decode()}"


async def load_images(parts: Sequence[ImagePart], policy: FetchPolicy) -> list[LoadedImage]:
    """Every image of a request, fetched in parallel and checked; raises for the first bad one."""
    return list(await asyncio.gather(*(load_image(p, i, policy) for i, p in enumerate(parts))))


async def load_image(part: ImagePart, index: int, policy: FetchPolicy) -> LoadedImage:
    label = f"image {index}"
    if part.url.startswith("data:"):
        data = _decode_data_url(part.url, label, policy.max_bytes)
    else:
        data = await fetch_image(part.url, policy, label)
    mime = next((m for magic, m in MAGIC.items() if data.startswith(magic)), None)
    if mime is None:
        raise ImageFetchError(f"{label}: unsupported image type; only JPEG and PNG are accepted.")
    width, height = await asyncio.to_thread(_check_decodable, data, label)
    return LoadedImage(data, mime, width, height, part.detail)


def _decode_data_url(url: str, label: str, max_bytes: int) -> bytes:
    header, sep, payload = url.partition(",")
    if not sep or not header.endswith(";base64"):
        raise ImageFetchError(f"{label}: a data URL must be data:image/...;base64,<data>.")
    if len(payload) > (max_bytes + 2) // 3 * 4 + 4:  # cheap check before decoding
        raise ImageFetchError(f"{label}: larger than {max_bytes} bytes.")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ImageFetchError(f"{label}: the data URL is not valid base64.") from None
    if len(data) > max_bytes:
        raise ImageFetchError(f"{label}: larger than {max_bytes} bytes.")
    return data


def _check_decodable(data: bytes, label: str) -> tuple[int, int]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                if width * height > MAX_PIXELS:
                    raise ImageFetchError(f"{label}: {width}x{height} pixels is more than this server decodes.")
                image.load()
    except ImageFetchError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageFetchError(f"{label}: too many pixels to decode.") from None
    except Exception:
        raise ImageFetchError(f"{label}: the image cannot be decoded.") from None
    return width, height


__all__ = ["MAX_IMAGE_BYTES", "LoadedImage", "image_tokens", "load_image", "load_images", "resolved_detail"]
