"""The Files API's core, below the REST and gRPC adapters: uploads streamed into the shared store
(store/files.py), each file its owner's (another key's id is "not found"), a size cap, a per-key quota,
expiry with cleanup.

Limits as xAI's: a file at most 50 MB (413 past it); `expires_after` 3,600 to 2,592,000 seconds, or no
expiry. The quota (bytes a key may keep, uploads in progress included) is the operator's setting.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator

from localxai.documents import extract_text
from localxai.errors import InvalidArgument, NotFound, PayloadTooLarge, ResourceExhausted
from localxai.store.files import SORTS, FileRecord, FileRows
from localxai.store.store import Store
from localxai.tasks import Background, every

MAX_FILE_BYTES = 50 * 1000 * 1000
CHUNK_BYTES = 1 << 20  # what one stored chunk (and one transaction) holds
EXPIRY_S = (3600, 2_592_000)
STALE_UPLOAD_S = 600.0  # an upload that has not moved for this long died with its process
MAX_PAGE = 100
NOT_FOUND = "File not found, deleted, or expired."
CLEANUP_S = 60.0

log = logging.getLogger(__name__)


class Files:
    def __init__(self, store: Store, quota_bytes: int | None = None) -> None:
        self._rows = FileRows(store)
        self._quota = quota_bytes
        self._janitor = Background("files-cleanup")

    async def start(self) -> None:
        """Remove expired files and dead uploads now and every CLEANUP_S while the server runs."""
        self._janitor.start(every(CLEANUP_S, self._clean, "file cleanup"))

    async def close(self) -> None:
        await self._janitor.close()

    async def _clean(self) -> None:
        if removed := await self.expire():
            log.info("removed %d expired or abandoned files", removed)

    async def upload(
        self, owner: str, filename: str, data: AsyncIterator[bytes], expires_after: int | None = None
    ) -> FileRecord:
        """Store what `data` yields as one file; nothing of it stays when the upload fails or is cut."""
        if expires_after is not None and not EXPIRY_S[0] <= expires_after <= EXPIRY_S[1]:
            raise InvalidArgument(
                f"expires_after must be between {EXPIRY_S[0]} and {EXPIRY_S[1]} seconds, got {expires_after}."
            )
        if not filename or len(filename) > 1024:
            raise InvalidArgument("A file needs a name of 1 to 1024 characters.")
        room = None if self._quota is None else self._quota - await asyncio.to_thread(self._rows.used_bytes, owner)
        file_id = f"file_{uuid.uuid4()}"
        expires_at = None if expires_after is None else time.time() + expires_after
        await asyncio.to_thread(self._rows.begin, file_id, owner, filename, expires_at)
        try:
            total, seq, pending = 0, 0, bytearray()
            async for piece in data:
                total += len(piece)
                if total > MAX_FILE_BYTES:
                    raise PayloadTooLarge(f"A file may be at most {MAX_FILE_BYTES // 1_000_000} MB.")
                if room is not None and total > room:
                    raise ResourceExhausted(
                        f"This API key's file storage is full ({self._quota} bytes): delete files to upload more."
                    )
                pending += piece
                while len(pending) >= CHUNK_BYTES:
                    await asyncio.to_thread(self._rows.append, file_id, seq, bytes(pending[:CHUNK_BYTES]))
                    del pending[:CHUNK_BYTES]
                    seq += 1
            if pending:
                await asyncio.to_thread(self._rows.append, file_id, seq, bytes(pending))
            return await asyncio.to_thread(self._rows.finish, file_id)
        except BaseException:
            await asyncio.shield(asyncio.to_thread(self._rows.discard, file_id))
            raise

    async def get(self, file_id: str, owner: str) -> FileRecord:
        record = await asyncio.to_thread(self._rows.get, file_id, owner)
        if record is None:
            raise NotFound(NOT_FOUND)
        return record

    async def page(
        self, owner: str, limit: int = MAX_PAGE, order: str = "desc", sort_by: str = "created_at", token: str = ""
    ) -> tuple[list[FileRecord], str]:
        """One page and the token of the next: the last file's id (xAI always returns one; the end is a page
        shorter than `limit`). A token is also a file id, so OpenAI's `after` is the same thing."""
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidArgument(f"limit must be between 1 and {MAX_PAGE}, got {limit}.")
        if order not in ("asc", "desc"):
            raise InvalidArgument(f"order must be asc or desc, got {order!r}.")
        if sort_by not in SORTS:
            raise InvalidArgument(f"sort_by must be one of {', '.join(SORTS)}, got {sort_by!r}.")
        records = await asyncio.to_thread(self._rows.page, owner, limit, order == "desc", sort_by, token or None)
        if records is None:
            raise InvalidArgument("pagination_token is not one of this key's files (deleted or expired?).")
        return records, records[-1].id if records else token

    async def delete(self, file_id: str, owner: str) -> None:
        if not await asyncio.to_thread(self._rows.delete, file_id, owner):
            raise NotFound(NOT_FOUND)

    async def content(self, file_id: str, owner: str, text: bool = False) -> tuple[FileRecord, AsyncIterator[bytes]]:
        """The file, and its bytes a stored chunk at a time, or its extracted text (errors before any byte)."""
        record = await self.get(file_id, owner)
        if not text:
            return record, self._stream(file_id)
        extracted = (await self.text(record)).encode()
        return record, _pieces(extracted)

    async def text(self, record: FileRecord) -> str:
        """A file's text (documents.py), extracted on first use and kept beside it."""
        kept = await asyncio.to_thread(self._rows.text, record.id)
        if kept is not None:
            return kept
        extracted = await extract_text(record.filename, self._stream(record.id))
        await asyncio.to_thread(self._rows.save_text, record.id, extracted)
        return extracted

    async def _stream(self, file_id: str) -> AsyncIterator[bytes]:
        chunks: Iterator[bytes] = self._rows.chunks(file_id)
        while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
            yield chunk

    async def head(self, record: FileRecord, size: int = 16) -> bytes:
        """A file's first bytes (what kind of file it is)."""
        async for chunk in self._stream(record.id):
            return chunk[:size]
        return b""

    async def expire(self) -> int:
        now = time.time()
        return await asyncio.to_thread(self._rows.expire, now, now - STALE_UPLOAD_S)


async def _pieces(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), CHUNK_BYTES):
        yield data[start : start + CHUNK_BYTES]
