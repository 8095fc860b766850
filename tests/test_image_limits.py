"""Decoding costs: pixels counted from the headers per image and per request, decodes one at a time."""

from __future__ import annotations

import asyncio
import base64
import io
import random
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator

import pytest
from PIL import Image, ImageFile

from localxai.chat import ImagePart
from localxai.media import images
from localxai.media.fetch import FetchPolicy, ImageFetchError
from localxai.media.images import MAX_REQUEST_PIXELS, load_images

Loader = Callable[[ImageFile.ImageFile], object]


def png(width: int, height: int) -> bytes:
    """A valid black 1-bit PNG: a few KB however many pixels it claims."""
    raw = zlib.compress((b"\x00" + bytes((width + 7) // 8)) * height)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def jpeg(width: int, height: int) -> bytes:
    """A JPEG of noise, so that its entropy-coded data is substantial."""
    noise = random.Random(7).randbytes(width * height * 3)
    out = io.BytesIO()
    Image.frombytes("RGB", (width, height), noise).save(out, format="JPEG", quality=90)
    return out.getvalue()


def part(data: bytes) -> ImagePart:
    mime = "image/png" if data.startswith(b"\x89PNG") else "image/jpeg"
    return ImagePart(f"data:{mime};base64,{base64.b64encode(data).decode()}")


def load(parts: list[ImagePart]) -> list[images.LoadedImage]:
    return asyncio.run(load_images(parts, FetchPolicy()))


class Decodes:
    """Every full decode (ImageFile.load): the size decoded, and how many ran at once."""

    def __init__(self) -> None:
        self.sizes: list[tuple[int, int]] = []
        self.running = 0
        self.most_at_once = 0
        self._lock = threading.Lock()

    def wrap(self, load: Loader) -> Loader:
        def counted(image: ImageFile.ImageFile) -> object:
            with self._lock:
                self.sizes.append(image.size)
                self.running += 1
                self.most_at_once = max(self.most_at_once, self.running)
            try:
                time.sleep(0.02)  # long enough for parallel decodes to overlap
                return load(image)
            finally:
                with self._lock:
                    self.running -= 1

        return counted


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> Iterator[Decodes]:
    counter = Decodes()
    monkeypatch.setattr(ImageFile.ImageFile, "load", counter.wrap(ImageFile.ImageFile.load))
    yield counter


def test_request_pixel_budget_refused_before_any_decode(decodes: Decodes) -> None:
    eight_49_mpx = [part(png(7000, 7000)) for _ in range(8)]  # each within MAX_PIXELS, 392 M in all
    with pytest.raises(ImageFetchError, match=f"at most {MAX_REQUEST_PIXELS:,} pixels per request") as info:
        load(eight_49_mpx)
    assert info.value.status.name == "INVALID_ARGUMENT"
    assert "392,000,000 pixels in all" in str(info.value)
    assert decodes.sizes == []


def test_request_pixel_budget_follows_the_constant(decodes: Decodes, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images, "MAX_REQUEST_PIXELS", 100 * 100)
    assert len(load([part(png(100, 50)), part(png(50, 100))])) == 2
    with pytest.raises(ImageFetchError, match="at most 10,000 pixels per request"):
        load([part(png(100, 50)), part(png(50, 101))])
    assert len(decodes.sizes) == 2  # the two that passed; nothing of the refused request


def test_image_pixel_cap_refused_before_decoding(decodes: Decodes) -> None:
    with pytest.raises(ImageFetchError, match="image 1: 8000x8000 pixels is more than this server decodes"):
        load([part(png(10, 10)), part(png(8000, 8000))])
    assert decodes.sizes == []


def test_phone_photos_pass_and_jpeg_is_decoded_small(decodes: Decodes) -> None:
    photos = [part(png(4000, 3000)) for _ in range(7)] + [part(jpeg(2000, 1500))]  # 99 M pixels
    loaded = load(photos)
    assert [(i.width, i.height) for i in loaded] == [(4000, 3000)] * 7 + [(2000, 1500)]
    assert loaded[-1].mime == "image/jpeg"
    assert sorted(decodes.sizes) == sorted([(4000, 3000)] * 7 + [(250, 188)])  # the JPEG at 1/8 scale


def test_damaged_images_still_refused() -> None:
    whole = jpeg(800, 600)
    with pytest.raises(ImageFetchError, match="image 0: the image cannot be decoded"):
        load([part(whole[: len(whole) // 2])])
    broken = png(64, 64)
    idat = 8 + 25 + 8  # signature, IHDR chunk, IDAT length and type
    broken = broken[:idat] + bytes(b ^ 0xFF for b in broken[idat : idat + 4]) + broken[idat + 4 :]
    with pytest.raises(ImageFetchError, match="image 0: the image cannot be decoded"):
        load([part(broken)])


def test_one_decode_at_a_time_across_requests(decodes: Decodes) -> None:
    request = [part(png(300, 200)) for _ in range(4)]

    async def two_requests() -> None:
        await asyncio.gather(load_images(request, FetchPolicy()), load_images(request, FetchPolicy()))

    asyncio.run(two_requests())
    assert len(decodes.sizes) == 8
    assert decodes.most_at_once == 1


def test_a_bad_image_cancels_the_other_fetches(monkeypatch: pytest.MonkeyPatch) -> None:
    cancelled: list[str] = []

    async def endless_fetch(url: str, policy: FetchPolicy, label: str) -> bytes:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.append(label)
            raise
        return b""

    monkeypatch.setattr(images, "fetch_image", endless_fetch)

    async def request() -> list[str]:
        parts = [ImagePart("http://example.com/a.png"), ImagePart("data:image/png;base64,!!")]
        with pytest.raises(ImageFetchError, match="image 1: the data URL is not valid base64"):
            await load_images(parts, FetchPolicy())
        return list(cancelled)

    assert asyncio.run(request()) == ["image 0"]
