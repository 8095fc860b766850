"""The Files core (files.py, store/files.py) on SQLite and PostgreSQL: streamed uploads, ownership, limits,
paging, expiry, and what an upload that fails or dies leaves behind (nothing)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa

from localxai import files as files_module
from localxai.errors import InvalidArgument, NotFound, PayloadTooLarge, ResourceExhausted
from localxai.files import CHUNK_BYTES, Files
from localxai.store.store import Store
from localxai.store.tables import file_chunks
from localxai.store.tables import files as file_table


async def pieces(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def read(files: Files, file_id: str, owner: str) -> bytes:
    _, stream = await files.content(file_id, owner)
    return b"".join([chunk async for chunk in stream])


def rows(store: Store) -> tuple[int, int]:
    with store.engine.connect() as conn:
        return (conn.scalar(sa.select(sa.func.count()).select_from(file_table)) or 0,
                conn.scalar(sa.select(sa.func.count()).select_from(file_chunks)) or 0)  # fmt: skip


def test_upload_read_list_delete_and_ownership(db_url: str) -> None:
    store = Store(db_url)
    files = Files(store)

    async def go() -> None:
        body = bytes(range(256)) * (CHUNK_BYTES // 128)  # two stored chunks and a bit, in odd pieces
        record = await files.upload("alice", "notes.bin", pieces(body[:1000], body[1000:], b"tail"))
        assert record.id.startswith("file_") and record.bytes == len(body) + 4 and record.expires_at is None
        assert await read(files, record.id, "alice") == body + b"tail"
        assert rows(store) == (1, 3)
        with pytest.raises(NotFound, match="File not found, deleted, or expired"):
            await files.get(record.id, "bob")  # another key's file does not exist for it
        with pytest.raises(NotFound):
            await files.content(record.id, "bob")
        for name in ("b.txt", "a.txt"):
            await files.upload("alice", name, pieces(b"x"), expires_after=3600)
        first, token = await files.page("alice", limit=2, sort_by="filename", order="asc")
        rest, _ = await files.page("alice", limit=2, sort_by="filename", order="asc", token=token)
        assert [r.filename for r in first + rest] == ["a.txt", "b.txt", "notes.bin"] and len(rest) == 1
        assert (await files.page("bob"))[0] == []
        await files.delete(record.id, "alice")
        with pytest.raises(NotFound):
            await files.delete(record.id, "alice")
        assert rows(store) == (2, 2)  # its chunks went with it

    asyncio.run(go())


def test_limits_and_bad_arguments_leave_nothing(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store(db_url)
    monkeypatch.setattr(files_module, "MAX_FILE_BYTES", 10)

    async def go() -> None:
        files = Files(store, quota_bytes=8)
        with pytest.raises(InvalidArgument, match="between 3600 and 2592000"):
            await files.upload("alice", "f", pieces(b"x"), expires_after=60)
        with pytest.raises(ResourceExhausted, match="storage is full"):
            await files.upload("alice", "f", pieces(b"12345", b"6789"))
        with pytest.raises(PayloadTooLarge, match="at most"):
            await Files(store).upload("alice", "f", pieces(b"123456", b"78901"))
        for bad in ({"limit": 0}, {"order": "up"}, {"sort_by": "owner"}, {"token": "x"}):
            with pytest.raises(InvalidArgument):
                await files.page("alice", **bad)  # type: ignore[arg-type]

        async def cut() -> AsyncIterator[bytes]:
            yield b"half"
            raise ConnectionError("the client went away")

        with pytest.raises(ConnectionError):
            await files.upload("alice", "f", cut())
        assert rows(store) == (0, 0)

    asyncio.run(go())


def test_expired_files_and_dead_uploads_are_cleaned_up(db_url: str) -> None:
    store = Store(db_url)
    files = Files(store)
    rows_api = files._rows

    async def go() -> None:
        kept = await files.upload("alice", "kept", pieces(b"k"))
        gone = await files.upload("alice", "gone", pieces(b"g"), expires_after=3600)
        # an upload whose process died mid-way: a row nobody sees, with a chunk
        rows_api.begin("file_dead", "alice", "dead", None)
        rows_api.append("file_dead", 0, b"partial")
        assert [r.id for r in (await files.page("alice"))[0]] == [gone.id, kept.id]
        assert rows_api.expire(time.time() + 7200, stale_before=time.time() + 1) == 2
        assert [r.id for r in (await files.page("alice"))[0]] == [kept.id]
        assert rows(store) == (1, 1)

    asyncio.run(go())
