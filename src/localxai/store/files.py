"""Uploaded files in the database every replica shares: a row per file, its bytes in ordered chunks.

An upload is written as it arrives, a chunk per transaction, under a row in state `uploading` that
nobody sees; the last step marks it `ready`. A process that dies mid-upload leaves an `uploading` row
whose chunks `expire` removes once it has not moved for a while, so no half file is ever visible and no
bytes are orphaned. Reading streams the chunks one query at a time: memory stays one chunk per reader.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import sqlalchemy as sa

from localxai.store.store import Store
from localxai.store.tables import file_chunks, file_texts, files

SORTS = {"created_at": files.c.created_at, "filename": files.c.filename, "size": files.c.bytes}


@dataclass(frozen=True)
class FileRecord:
    id: str
    owner: str
    filename: str
    bytes: int
    created_at: float
    expires_at: float | None


class FileRows:
    def __init__(self, store: Store) -> None:
        self._store = store

    def begin(self, file_id: str, owner: str, filename: str, expires_at: float | None) -> None:
        now = time.time()
        with self._store._write() as conn:
            conn.execute(files.insert().values(id=file_id, owner=owner, filename=filename, bytes=0, state="uploading",
                                               created_at=now, updated_at=now, expires_at=expires_at))  # fmt: skip

    def append(self, file_id: str, seq: int, data: bytes) -> None:
        with self._store._write() as conn:
            conn.execute(file_chunks.insert().values(file_id=file_id, seq=seq, data=data))
            conn.execute(
                files.update()
                .where(files.c.id == file_id)
                .values(bytes=files.c.bytes + len(data), updated_at=time.time())
            )

    def finish(self, file_id: str) -> FileRecord:
        with self._store._write() as conn:
            conn.execute(files.update().where(files.c.id == file_id).values(state="ready", updated_at=time.time()))
            row = conn.execute(sa.select(files).where(files.c.id == file_id)).mappings().one()
        return _record(row)

    def discard(self, file_id: str) -> None:
        """An upload that failed (too big, over quota, the client went away): its rows and bytes go."""
        with self._store._write() as conn:
            _drop(conn, [file_id])

    def _visible(self, owner: str, now: float) -> sa.ColumnElement[bool]:
        alive = sa.or_(files.c.expires_at.is_(None), files.c.expires_at > now)
        return sa.and_(files.c.owner == owner, files.c.state == "ready", alive)

    def get(self, file_id: str, owner: str) -> FileRecord | None:
        with self._store._read() as conn:
            query = sa.select(files).where(files.c.id == file_id, self._visible(owner, time.time()))
            row = conn.execute(query).mappings().first()
        return None if row is None else _record(row)

    def page(
        self, owner: str, limit: int, descending: bool, sort_by: str, after: str | None
    ) -> list[FileRecord] | None:
        """Up to `limit` files in order, those after the file `after` (keyset: stable while files come and go);
        None when `after` is not one of `owner`'s files."""
        column = SORTS[sort_by]
        order = (column.desc(), files.c.id.desc()) if descending else (column.asc(), files.c.id.asc())
        visible = self._visible(owner, time.time())
        query = sa.select(files).where(visible).order_by(*order).limit(limit)
        with self._store._read() as conn:
            if after:
                mark = conn.execute(sa.select(column, files.c.id).where(visible, files.c.id == after)).first()
                if mark is None:
                    return None
                key, mark_key = sa.tuple_(column, files.c.id), sa.tuple_(sa.literal(mark[0]), sa.literal(mark[1]))
                query = query.where(key < mark_key if descending else key > mark_key)
            rows = conn.execute(query).mappings().all()
        return [_record(r) for r in rows]

    def used_bytes(self, owner: str) -> int:
        """What `owner` stores now, uploads in progress included (they count against its quota)."""
        with self._store._read() as conn:
            query = sa.select(sa.func.coalesce(sa.func.sum(files.c.bytes), 0)).where(files.c.owner == owner)
            return int(conn.execute(query).scalar_one())

    def chunks(self, file_id: str) -> Iterator[bytes]:
        seq = -1
        while True:
            with self._store._read() as conn:
                query = (
                    sa.select(file_chunks.c.seq, file_chunks.c.data)
                    .where(file_chunks.c.file_id == file_id, file_chunks.c.seq > seq)
                    .order_by(file_chunks.c.seq)
                    .limit(1)
                )
                row = conn.execute(query).first()
            if row is None:
                return
            seq = row[0]
            yield bytes(row[1])

    def delete(self, file_id: str, owner: str) -> bool:
        with self._store._write() as conn:
            gone = conn.execute(files.delete().where(files.c.id == file_id, self._visible(owner, time.time())))
            if gone.rowcount != 1:
                return False
            _drop(conn, [file_id])
            return True

    def expire(self, now: float, stale_before: float) -> int:
        """Remove expired files and uploads that stopped before `stale_before`, with their bytes."""
        with self._store._write() as conn:
            dead = sa.or_(
                sa.and_(files.c.expires_at.is_not(None), files.c.expires_at <= now),
                sa.and_(files.c.state == "uploading", files.c.updated_at < stale_before),
            )
            ids = list(conn.scalars(sa.select(files.c.id).where(dead)))
            if ids:
                _drop(conn, ids)
            return len(ids)

    def text(self, file_id: str) -> str | None:
        with self._store._read() as conn:
            return conn.scalar(sa.select(file_texts.c.text).where(file_texts.c.file_id == file_id))

    def save_text(self, file_id: str, text: str) -> None:
        """Keep a file's extracted text, unless the file went meanwhile (or another reader kept it first)."""
        with self._store._write() as conn:
            if conn.scalar(sa.select(files.c.id).where(files.c.id == file_id)) is None:
                return
            if conn.scalar(sa.select(file_texts.c.file_id).where(file_texts.c.file_id == file_id)) is None:
                conn.execute(file_texts.insert().values(file_id=file_id, text=text))


def _drop(conn: sa.Connection, ids: list[str]) -> None:
    """A file's rows: its bytes, its text, itself."""
    conn.execute(file_chunks.delete().where(file_chunks.c.file_id.in_(ids)))
    conn.execute(file_texts.delete().where(file_texts.c.file_id.in_(ids)))
    conn.execute(files.delete().where(files.c.id.in_(ids)))


def _record(row: sa.RowMapping) -> FileRecord:
    return FileRecord(
        id=row["id"], owner=row["owner"], filename=row["filename"], bytes=int(row["bytes"]),
        created_at=row["created_at"], expires_at=row["expires_at"],
    )  # fmt: skip
