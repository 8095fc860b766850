"""Image inputs: data URLs and http(s) URLs, checked before any engine sees them.

JPEG and PNG only, decided by the bytes (magic numbers), not by the declared type; at most 20 MiB
each (decoded); decodable, and not a decompression bomb: pixels are counted from the headers, per image
and per request, before anything is decoded, and decoding runs one image at a time per process. Errors
name the image by its position in the request.

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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from typing import TypeVar

from PIL import Image, ImageOps

from localxai.chat import Detail, ImagePart
from localxai.media.fetch import MAX_IMAGE_BYTES, FetchPolicy, ImageFetchError, fetch_image
from localxai.tasks import all_or_nothing

MAX_PIXELS = 50_000_000  # decompression-bomb cap (a 20 MiB PNG can claim billions of pixels)
MAX_REQUEST_PIXELS = 128_000_000  # all images of a request: ten 12 Mpx photos, not eight 49 Mpx PNGs
FORMATS = ("PNG", "JPEG")
MAGIC = {b"\x89PNG\r\n\x1a\n": "image/png", b"\xff\xd8\xff": "image/jpeg"}
TILE = 448
TOKENS_PER_TILE = 256
MAX_TILES = 6

# One decoder thread for the whole process, on purpose: decoding is CPU-bound anyway, and so at most one
# image's pixels are in memory at a time, however many requests come at once. A decode still queued when
# its request fails or goes away is dropped (cancelling its future cancels it).
_DECODER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="localxai-image-decode")
T = TypeVar("T")


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
    """Every image of a request, checked; raises for the first bad one.

    The images are fetched in parallel (a failure cancels the others) and sized from their headers; only
    when the request's pixels are within MAX_REQUEST_PIXELS are they decoded, one at a time.
    """
    images = await all_or_nothing([_opened(p, i, policy) for i, p in enumerate(parts)])
    total = sum(image.width * image.height for image in images)
    if total > MAX_REQUEST_PIXELS:
        raise ImageFetchError(
            f"the request's images have {total:,} pixels in all; this server decodes at most "
            f"{MAX_REQUEST_PIXELS:,} pixels per request."
        )
    for index, image in enumerate(images):
        await _check_decodable(image, f"image {index}")
    return images


async def _opened(part: ImagePart, index: int, policy: FetchPolicy) -> LoadedImage:
    """The image's bytes, type and size, read from its header: nothing is decoded yet."""
    label = f"image {index}"
    if part.url.startswith("data:"):
        data = _decode_data_url(part.url, label, policy.max_bytes)
    else:
        data = await fetch_image(part.url, policy, label)
    mime = next((m for magic, m in MAGIC.items() if data.startswith(magic)), None)
    if mime is None:
        raise ImageFetchError(f"{label}: unsupported image type; only JPEG and PNG are accepted.")
    width, height = await asyncio.to_thread(_size, data, label)
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


def _size(data: bytes, label: str) -> tuple[int, int]:
    """Width and height from the header (Image.open reads no pixel data), within MAX_PIXELS."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=FORMATS) as image:
                width, height = image.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageFetchError(f"{label}: too many pixels to decode.") from None
    except Exception:
        raise ImageFetchError(f"{label}: the image cannot be decoded.") from None
    if width * height > MAX_PIXELS:
        raise ImageFetchError(f"{label}: {width}x{height} pixels is more than this server decodes.")
    return width, height


async def _check_decodable(image: LoadedImage, label: str) -> None:
    await asyncio.get_running_loop().run_in_executor(_DECODER, _decode, image.data, label)


def _decode(data: bytes, label: str) -> None:
    """Decodes the whole image, to refuse one that cannot be, and drops the pixels at once.

    A JPEG is decoded at 1/8 scale (Image.draft): the whole entropy-coded stream is still read and
    checked, with 1/64 of the pixels in memory. A PNG has no such mode.
    """
    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as image:
            image.draft(None, (1, 1))  # JPEG only; a no-op for PNG
            image.load()
    except Exception:
        raise ImageFetchError(f"{label}: the image cannot be decoded.") from None


__all__ = [
    "MAX_IMAGE_BYTES",
    "MAX_PIXELS",
    "MAX_REQUEST_PIXELS",
    "LoadedImage",
    "image_tokens",
    "load_images",
    "resolved_detail",
]
