"""The text of an uploaded document: PDFs through pypdf in a bounded child process, text files decoded.

A document is an attack surface (a PDF bomb, a parser bug, an endless page tree), so PDFs are read
in a child process with a memory and CPU limit and a wall-clock timeout; the server only ever sees
the text, at most MAX_TEXT_CHARS of it, or a clear error. Text, Markdown, CSV, JSON and code are
decoded as UTF-8 (or UTF-16 with a byte-order mark). Anything else is refused by name, never guessed
at: localxai does not unpack archives (no zip bombs) or office formats.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator

from localxai.errors import InvalidArgument

log = logging.getLogger(__name__)

MAX_TEXT_CHARS = 4_000_000  # about a million tokens: more than any model here reads
PAGE_BREAK = "\f"  # between a PDF's pages in its extracted text
PDF_TIMEOUT_S = 60.0
PDF_MEMORY_BYTES = 1 << 30
PDF_CPU_S = 45
IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a")
PDF_READERS = 2  # PDFs read at once, whatever the requests (each child may take 1 GiB)
_readers: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = {}
MAX_STDERR = 4096  # of a child's complaints, kept for the log
# What the child's exit status means (the rest: it could not read the PDF).
ENCRYPTED, TOO_LONG = 3, 4


def is_pdf(head: bytes) -> bool:
    return head.lstrip()[:5] == b"%PDF-"


def is_image(head: bytes) -> bool:
    return head.startswith(IMAGE_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")


async def extract_text(filename: str, data: AsyncIterator[bytes]) -> str:
    """The document's text; InvalidArgument naming the file when it has none this server can read."""
    first = await anext(data, b"")
    if is_pdf(first):
        return await _pdf_text(filename, first, data)
    if is_image(first):
        raise InvalidArgument(f"{filename} is an image: attach it as an image, not as a document.")
    content = bytearray(first)
    async for piece in data:
        content += piece
        if len(content) > 4 * MAX_TEXT_CHARS:
            raise _too_long(filename)
    text = await asyncio.to_thread(_decode, bytes(content))  # up to 16 MB: not on the event loop
    if text is None:
        raise InvalidArgument(
            f"{filename} is neither text nor a PDF: localxai reads PDFs and text files "
            "(plain text, Markdown, CSV, JSON, code)."
        )
    if len(text) > MAX_TEXT_CHARS:
        raise _too_long(filename)
    return text


def _decode(content: bytes) -> str | None:
    if content.startswith((b"\xff\xfe", b"\xfe\xff")):
        with contextlib.suppress(UnicodeDecodeError):
            return content.decode("utf-16")
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None
    return None if "\x00" in text else text


def _too_long(filename: str) -> InvalidArgument:
    return InvalidArgument(f"The text of {filename} is longer than {MAX_TEXT_CHARS} characters.")


async def _pdf_text(filename: str, first: bytes, rest: AsyncIterator[bytes]) -> str:
    readers = _readers.setdefault(asyncio.get_running_loop(), asyncio.Semaphore(PDF_READERS))
    async with readers:
        return await _read_pdf(filename, first, rest)


async def _read_pdf(filename: str, first: bytes, rest: AsyncIterator[bytes]) -> str:
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "localxai.pdftext", str(MAX_TEXT_CHARS), str(PDF_MEMORY_BYTES), str(PDF_CPU_S),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdin, stdout, stderr = child.stdin, child.stdout, child.stderr
    assert stdin is not None and stdout is not None and stderr is not None

    async def feed() -> None:
        try:
            stdin.write(first)
            async for piece in rest:
                stdin.write(piece)
                await stdin.drain()
            stdin.close()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the child stopped reading (it failed): its status says why

    async def run() -> tuple[bytes, bytes, int]:
        _, out, err = await asyncio.gather(feed(), stdout.read(), _tail(stderr))
        return out, err, await child.wait()

    try:
        out, err, status = await asyncio.wait_for(run(), PDF_TIMEOUT_S)
    except asyncio.TimeoutError:
        raise InvalidArgument(f"Reading the PDF {filename} took longer than {PDF_TIMEOUT_S:.0f} seconds.") from None
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    if status == 0:
        return out.decode("utf-8", "replace")
    if status == ENCRYPTED:
        raise InvalidArgument(f"The PDF {filename} is encrypted; localxai reads PDFs without a password.")
    if status == TOO_LONG:
        raise _too_long(filename)
    log.info("pdf text of %s failed (status %s): %s", filename, status, err.decode("utf-8", "replace")[-500:])
    raise InvalidArgument(f"{filename} is not a PDF this server can read (damaged, or past its memory or time limit).")


async def _tail(stream: asyncio.StreamReader) -> bytes:
    """What a stream says, keeping only its last MAX_STDERR bytes."""
    kept = b""
    while piece := await stream.read(65536):
        kept = (kept + piece)[-MAX_STDERR:]
    return kept
