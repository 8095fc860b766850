"""Collections in the shared database: their documents (the indexer's queue too), chunks, and the two
searches over them, written once for SQLite and PostgreSQL.

Keyword search is the database's own full-text index: FTS5 with bm25 on SQLite, a `tsvector` column with
`ts_rank_cd` on PostgreSQL; a query matches chunks holding any of its words. Semantic search ranks by
cosine similarity: with pgvector (PostgreSQL) in the database (`<=>`), otherwise by scanning the searched
collections' vectors a page at a time with numpy, keeping the best `limit` (what sqlite-vec's vec0 does
too, without needing an sqlite3 that loads extensions: many Pythons' cannot).
"""

from __future__ import annotations

import heapq
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa

from localxai.errors import InternalError
from localxai.store.migrations import vector_schema
from localxai.store.store import Store
from localxai.store.tables import collection_documents, collections, document_chunks

WORD = re.compile(r"\w+", re.UNICODE)
SCAN_PAGE = 4096  # vectors read per query of a scan


@dataclass(frozen=True)
class CollectionRecord:
    id: str
    owner: str
    name: str
    description: str
    model: str
    chunk_chars: int
    overlap_chars: int
    inject_name: bool
    field_definitions: tuple[dict[str, Any], ...]
    created_at: float
    documents: int = 0
    total_bytes: int = 0


@dataclass(frozen=True)
class DocumentRecord:
    collection_id: str
    file_id: str
    name: str
    bytes: int
    fields: dict[str, str]
    status: str  # processing | processed | failed
    error: str | None
    chunks: int
    created_at: float
    indexed_at: float | None


@dataclass(frozen=True)
class Chunk:
    content: str
    start_char: int
    end_char: int
    page: int | None


@dataclass(frozen=True)
class Hit:
    chunk_id: str
    collection_id: str
    file_id: str
    content: str
    score: float
    start_char: int
    end_char: int
    page: int | None


class CollectionRows:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._vector_schema: str | None = None
        if store.dialect == "postgresql":
            with store._read() as conn:
                column = conn.exec_driver_sql(
                    "SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() "
                    "AND table_name = 'document_chunks' AND column_name = 'embedding_vec'"
                ).first()
                self._vector_schema = vector_schema(conn) if column is not None else None

    @property
    def vectors_in_database(self) -> bool:
        return self._vector_schema is not None

    # -- collections -------------------------------------------------------------------------------

    def create(self, record: CollectionRecord) -> None:
        now = time.time()
        with self._store._write() as conn:
            conn.execute(collections.insert().values(
                id=record.id, owner=record.owner, name=record.name, description=record.description,
                model=record.model, chunk_chars=record.chunk_chars, overlap_chars=record.overlap_chars,
                inject_name=record.inject_name, field_definitions=json.dumps(record.field_definitions),
                created_at=now, updated_at=now,
            ))  # fmt: skip

    def get(self, collection_id: str, owner: str) -> CollectionRecord | None:
        with self._store._read() as conn:
            rows = self._collections(conn, [collection_id], owner)
        return rows[0] if rows else None

    def owned(self, collection_ids: Sequence[str], owner: str) -> list[CollectionRecord]:
        with self._store._read() as conn:
            return self._collections(conn, collection_ids, owner)

    def _collections(self, conn: sa.Connection, ids: Sequence[str] | None, owner: str) -> list[CollectionRecord]:
        counts = (
            sa.select(
                collection_documents.c.collection_id,
                sa.func.count().label("documents"),
                sa.func.coalesce(sa.func.sum(collection_documents.c.bytes), 0).label("total_bytes"),
            )
            .group_by(collection_documents.c.collection_id)
            .subquery()
        )
        query = (
            sa.select(collections, counts.c.documents, counts.c.total_bytes)
            .select_from(collections.outerjoin(counts, counts.c.collection_id == collections.c.id))
            .where(collections.c.owner == owner)
        )
        if ids is not None:
            query = query.where(collections.c.id.in_(list(ids)))
        return [_collection(r) for r in conn.execute(query).mappings()]

    def page(
        self, owner: str, limit: int, descending: bool, sort_by: str, after: str | None
    ) -> list[CollectionRecord] | None:
        """An owner's collections in order, after the collection `after` (there are few: sorted here)."""
        with self._store._read() as conn:
            records = self._collections(conn, None, owner)
        records.sort(key=lambda r: (r.name if sort_by == "name" else r.created_at, r.id), reverse=descending)
        if after:
            ids = [r.id for r in records]
            if after not in ids:
                return None
            records = records[ids.index(after) + 1 :]
        return records[:limit]

    def update(self, collection_id: str, owner: str, **values: Any) -> bool:
        if "field_definitions" in values:
            values["field_definitions"] = json.dumps(values["field_definitions"])
        with self._store._write() as conn:
            done = conn.execute(
                collections.update()
                .where(collections.c.id == collection_id, collections.c.owner == owner)
                .values(**values, updated_at=time.time())
            )
            return done.rowcount == 1

    def delete(self, collection_id: str, owner: str) -> bool:
        with self._store._write() as conn:
            done = conn.execute(
                collections.delete().where(collections.c.id == collection_id, collections.c.owner == owner)
            )
            if done.rowcount != 1:
                return False
            self._drop_chunks(conn, collection_id, None)
            conn.execute(collection_documents.delete().where(collection_documents.c.collection_id == collection_id))
            return True

    # -- documents ---------------------------------------------------------------------------------

    def add_document(self, collection_id: str, file_id: str, owner: str, name: str, size: int,
                     fields: dict[str, str]) -> bool:  # fmt: skip
        """False when the file is in the collection already."""
        try:
            return self._add(collection_id, file_id, owner, name, size, fields)
        except InternalError as exc:
            if isinstance(exc.__cause__, sa.exc.IntegrityError):
                return False  # added by another request at the same moment
            raise

    def _add(self, collection_id: str, file_id: str, owner: str, name: str, size: int,
             fields: dict[str, str]) -> bool:  # fmt: skip
        now = time.time()
        with self._store._write() as conn:
            present = conn.execute(
                sa.select(collection_documents.c.file_id).where(
                    collection_documents.c.collection_id == collection_id, collection_documents.c.file_id == file_id
                )
            ).first()
            if present is not None:
                return False
            conn.execute(collection_documents.insert().values(
                collection_id=collection_id, file_id=file_id, owner=owner, name=name, bytes=size,
                fields=json.dumps(fields), status="processing", error=None, chunks=0, attempts=0,
                lease_until=None, created_at=now, updated_at=now, indexed_at=None,
            ))  # fmt: skip
            return True

    def documents(self, collection_id: str, file_ids: Sequence[str] | None = None) -> list[DocumentRecord]:
        query = sa.select(collection_documents).where(collection_documents.c.collection_id == collection_id)
        if file_ids is not None:
            query = query.where(collection_documents.c.file_id.in_(list(file_ids)))
        with self._store._read() as conn:
            return [_document(r) for r in conn.execute(query).mappings()]

    def update_document(self, collection_id: str, file_id: str, **values: Any) -> bool:
        if "fields" in values:
            values["fields"] = json.dumps(values["fields"])
        with self._store._write() as conn:
            done = conn.execute(
                collection_documents.update()
                .where(collection_documents.c.collection_id == collection_id, collection_documents.c.file_id == file_id)
                .values(**values, updated_at=time.time())
            )
            return done.rowcount == 1

    def remove_document(self, collection_id: str, file_id: str) -> bool:
        with self._store._write() as conn:
            done = conn.execute(
                collection_documents.delete().where(
                    collection_documents.c.collection_id == collection_id, collection_documents.c.file_id == file_id
                )
            )
            if done.rowcount != 1:
                return False
            self._drop_chunks(conn, collection_id, file_id)
            return True

    def claim(self, lease_s: float, max_attempts: int) -> tuple[DocumentRecord, str] | None:
        """A document waiting to be indexed, leased to the caller, with its owner; None when none waits. One
        whose indexing was cut `max_attempts` times (its process died each time) fails instead."""
        now = time.time()
        waiting = sa.and_(
            collection_documents.c.status == "processing",
            sa.or_(collection_documents.c.lease_until.is_(None), collection_documents.c.lease_until < now),
        )
        with self._store._write() as conn:
            row = (
                conn.execute(
                    sa.select(collection_documents).where(waiting).order_by(collection_documents.c.updated_at).limit(1)
                )
                .mappings()
                .first()
            )
            if row is None:
                return None
            key = sa.and_(
                collection_documents.c.collection_id == row["collection_id"],
                collection_documents.c.file_id == row["file_id"],
            )
            if row["attempts"] >= max_attempts:
                conn.execute(collection_documents.update().where(key, waiting).values(
                    status="failed", error=f"Indexing was cut short {max_attempts} times.", lease_until=None,
                ))  # fmt: skip
                return None
            taken = conn.execute(
                collection_documents.update()
                .where(key, waiting)
                .values(lease_until=now + lease_s, attempts=collection_documents.c.attempts + 1)
            )
            if taken.rowcount != 1:
                return None  # another worker took it first
            return _document(row), row["owner"]

    def finish(
        self, collection_id: str, file_id: str, chunks: Sequence[Chunk], vectors: npt.NDArray[np.float32]
    ) -> bool:
        """Replace the document's chunks and mark it processed, in one transaction; False when it was removed."""
        import uuid

        now = time.time()
        with self._store._write() as conn:
            key = sa.and_(
                collection_documents.c.collection_id == collection_id,
                collection_documents.c.file_id == file_id,
                collection_documents.c.status == "processing",  # not removed, failed or reindexed meanwhile
            )
            if conn.execute(sa.select(collection_documents.c.file_id).where(key)).first() is None:
                return False
            self._drop_chunks(conn, collection_id, file_id)
            for seq, (chunk, vector) in enumerate(zip(chunks, vectors, strict=True)):
                inserted = conn.execute(document_chunks.insert().values(
                    id=f"chunk_{uuid.uuid4()}", collection_id=collection_id, file_id=file_id, seq=seq,
                    content=chunk.content, start_char=chunk.start_char, end_char=chunk.end_char, page=chunk.page,
                    embedding=vector.astype("<f4").tobytes(),
                )).inserted_primary_key  # fmt: skip
                assert inserted is not None
                rowid = inserted[0]
                if self._store.dialect == "sqlite":
                    conn.exec_driver_sql(
                        "INSERT INTO document_chunks_fts(rowid, content) VALUES (?, ?)", (rowid, chunk.content)
                    )
                elif self._vector_schema is not None:
                    vector_type = f'"{self._vector_schema}".vector'
                    conn.execute(
                        sa.text(
                            f"UPDATE document_chunks SET embedding_vec = CAST(:v AS {vector_type}) WHERE rowid = :r"
                        ),
                        {"v": _vector_text(vector), "r": rowid},
                    )
            conn.execute(
                collection_documents.update()
                .where(key)
                .values(status="processed", error=None, chunks=len(chunks), lease_until=None, indexed_at=now,
                        updated_at=now)
            )  # fmt: skip
            return True

    def fail(self, collection_id: str, file_id: str, error: str) -> None:
        self.update_document(collection_id, file_id, status="failed", error=error, lease_until=None)

    def reindex(self, collection_id: str, file_id: str) -> bool:
        return self.update_document(
            collection_id, file_id, status="processing", error=None, attempts=0, lease_until=None
        )

    def _drop_chunks(self, conn: sa.Connection, collection_id: str, file_id: str | None) -> None:
        where = document_chunks.c.collection_id == collection_id
        if file_id is not None:
            where = sa.and_(where, document_chunks.c.file_id == file_id)
        if self._store.dialect == "sqlite":
            rowids = sa.select(document_chunks.c.rowid).where(where)
            compiled = rowids.compile(conn, compile_kwargs={"literal_binds": True})
            conn.exec_driver_sql(f"DELETE FROM document_chunks_fts WHERE rowid IN ({compiled})")
        conn.execute(document_chunks.delete().where(where))

    # -- search ------------------------------------------------------------------------------------

    def keyword(
        self, query: str, collection_ids: Sequence[str], limit: int, file_ids: Sequence[str] | None = None
    ) -> list[Hit]:
        """The best chunks holding a query word; only those of `file_ids` when given (a search's filter)."""
        words = WORD.findall(query.lower())[:64]
        if not words or file_ids == []:
            return []
        ids = list(collection_ids)
        with self._store._read() as conn:
            if self._store.dialect == "sqlite":
                match = " OR ".join(f'"{w}"' for w in words)
                placeholders = ", ".join("?" for _ in ids)
                only = "" if file_ids is None else f" AND c.file_id IN ({', '.join('?' for _ in file_ids)})"
                rows = conn.exec_driver_sql(
                    "SELECT c.id, c.collection_id, c.file_id, c.content, -bm25(document_chunks_fts), c.start_char, "
                    "c.end_char, c.page FROM document_chunks_fts f JOIN document_chunks c ON c.rowid = f.rowid "
                    f"WHERE document_chunks_fts MATCH ? AND c.collection_id IN ({placeholders}){only} "
                    "ORDER BY bm25(document_chunks_fts) LIMIT ?",
                    (match, *ids, *(file_ids or ()), limit),
                ).all()
            else:
                only = "" if file_ids is None else " AND file_id = ANY(:files)"
                rows = conn.execute(
                    sa.text(
                        "SELECT id, collection_id, file_id, content, ts_rank_cd(tsv, q), start_char, end_char, page "
                        "FROM document_chunks, to_tsquery('english', :q) q "
                        f"WHERE tsv @@ q AND collection_id = ANY(:ids){only} ORDER BY ts_rank_cd(tsv, q) DESC LIMIT :n"
                    ),
                    {"q": " | ".join(words), "ids": ids, "n": limit, "files": list(file_ids or ())},
                ).all()
        return [Hit(*row) for row in rows]

    def semantic(
        self, vector: npt.NDArray[np.float32], collection_ids: Sequence[str], limit: int,
        file_ids: Sequence[str] | None = None,
    ) -> list[Hit]:  # fmt: skip
        """The chunks nearest `vector`; only those of `file_ids` when given."""
        if file_ids == []:
            return []
        ids = list(collection_ids)
        if self._vector_schema is not None:
            with self._store._read() as conn:
                rows = conn.execute(
                    sa.text(
                        "SELECT id, collection_id, file_id, content, 1 - (embedding_vec OPERATOR("
                        f'"{self._vector_schema}".<=>) CAST(:v AS "{self._vector_schema}".vector)), '
                        "start_char, end_char, page FROM document_chunks WHERE collection_id = ANY(:ids) "
                        + ("" if file_ids is None else "AND file_id = ANY(:files) ")
                        + f'ORDER BY embedding_vec OPERATOR("{self._vector_schema}".<=>) '
                        f'CAST(:v AS "{self._vector_schema}".vector) LIMIT :n'
                    ),
                    {"v": _vector_text(vector), "ids": ids, "n": limit, "files": list(file_ids or ())},
                ).all()
            return [Hit(*row) for row in rows]
        best: list[tuple[float, int]] = []  # (score, rowid): the best `limit` seen so far
        after = 0
        while True:
            query = sa.select(document_chunks.c.rowid, document_chunks.c.embedding).where(
                document_chunks.c.collection_id.in_(ids), document_chunks.c.rowid > after
            )
            if file_ids is not None:
                query = query.where(document_chunks.c.file_id.in_(list(file_ids)))
            with self._store._read() as conn:
                page = conn.execute(query.order_by(document_chunks.c.rowid).limit(SCAN_PAGE)).all()
            if not page:
                break
            after = page[-1][0]
            matrix = np.frombuffer(b"".join(bytes(r[1]) for r in page), dtype="<f4").reshape(len(page), -1)
            if matrix.shape[1] != vector.shape[0]:
                continue  # vectors of another model (never within one collection)
            scores = matrix @ vector
            for score, rowid in zip(scores.tolist(), (r[0] for r in page), strict=True):
                if len(best) < limit:
                    heapq.heappush(best, (score, rowid))
                elif score > best[0][0]:
                    heapq.heapreplace(best, (score, rowid))
        ranked = sorted(best, reverse=True)
        if not ranked:
            return []
        with self._store._read() as conn:
            query = sa.select(document_chunks).where(document_chunks.c.rowid.in_([i for _, i in ranked]))
            found = {r.rowid: r for r in conn.execute(query)}
        return [
            Hit(found[i].id, found[i].collection_id, found[i].file_id, found[i].content, score, found[i].start_char,
                found[i].end_char, found[i].page)
            for score, i in ranked
            if i in found
        ]  # fmt: skip


def _vector_text(vector: npt.NDArray[np.float32]) -> str:
    return "[" + ",".join(f"{x:.7g}" for x in vector.tolist()) + "]"


def _collection(row: sa.RowMapping) -> CollectionRecord:
    return CollectionRecord(
        id=row["id"], owner=row["owner"], name=row["name"], description=row["description"], model=row["model"],
        chunk_chars=row["chunk_chars"], overlap_chars=row["overlap_chars"], inject_name=bool(row["inject_name"]),
        field_definitions=tuple(json.loads(row["field_definitions"])), created_at=row["created_at"],
        documents=int(row["documents"] or 0), total_bytes=int(row["total_bytes"] or 0),
    )  # fmt: skip


def _document(row: sa.RowMapping) -> DocumentRecord:
    return DocumentRecord(
        collection_id=row["collection_id"], file_id=row["file_id"], name=row["name"], bytes=int(row["bytes"]),
        fields=json.loads(row["fields"]), status=row["status"], error=row["error"], chunks=int(row["chunks"]),
        created_at=row["created_at"], indexed_at=row["indexed_at"],
    )  # fmt: skip
