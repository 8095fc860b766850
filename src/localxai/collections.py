"""Collections of documents and search over them, below the gRPC (`collections.Collections`,
`Documents.Search`) and REST (`/v1/collections...`, `/v1/documents/search`) adapters and the
`collections_search` / `file_search` tools.

A document is an uploaded file (files.py) added to a collection: its row says `processing` until the
indexer has read its text (documents.py), cut it into chunks that remember where they stood in that text
(characters and page), embedded them with the collection's model and written them with their full-text
index, all in one transaction: then `processed`, or `failed` with the reason. The queue is the
documents table itself, leased, so indexing survives a restart and any replica may do it.

Everything is its owner key's, as files are: another key's collection is "not found". Search modes:
keyword (the database's full-text index), semantic (cosine over the chunks' vectors) and hybrid
(reciprocal rank fusion of the two, the default, as at xAI).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import numpy as np

from localxai import filters
from localxai.documents import PAGE_BREAK
from localxai.embeddings import DEFAULT_EMBEDDING_MODEL, Embeddings
from localxai.errors import InvalidArgument, LocalXAIError, NotFound
from localxai.files import Files
from localxai.store.collections import Chunk, CollectionRecord, CollectionRows, DocumentRecord, Hit
from localxai.store.files import FileRecord
from localxai.store.store import Store
from localxai.tasks import Background

log = logging.getLogger(__name__)
K = TypeVar("K")

CHUNK_CHARS = (200, 1200, 8000)  # least, default, most characters in a chunk
DEFAULT_OVERLAP = 200
MAX_PAGE = 100
SEARCH_LIMIT = (1, 10, 100)  # least, default, most matches
RRF_K = 60
INDEX_TIMEOUT_S = 600.0
LEASE_S = INDEX_TIMEOUT_S + 60.0  # past the time one document may take: no other worker takes it meanwhile
MAX_ATTEMPTS = 3
EMBED_BATCH = 64
NOT_FOUND = "Collection not found."
MODES = ("hybrid", "semantic", "keyword")


@dataclass(frozen=True)
class Match(Hit):
    collection_ids: tuple[str, ...] = ()


class Collections:
    def __init__(self, store: Store, files: Files, embeddings: Embeddings) -> None:
        self._rows = CollectionRows(store)
        self._files = files
        self._embeddings = embeddings
        self._wake = asyncio.Event()
        self._worker = Background("collections-indexer")

    async def start(self) -> None:
        self._worker.start(self._index_forever())

    async def close(self) -> None:
        await self._worker.close()

    # -- collections -------------------------------------------------------------------------------

    async def create(
        self, owner: str, name: str, model: str | None = None, chunk_chars: int | None = None,
        overlap_chars: int | None = None, inject_name: bool = False, field_definitions: Sequence[dict[str, Any]] = (),
        description: str = "",
    ) -> CollectionRecord:  # fmt: skip
        if not name or len(name) > 1024:
            raise InvalidArgument("A collection needs a name of 1 to 1024 characters.")
        model = self._embeddings.get_model(model or DEFAULT_EMBEDDING_MODEL).id  # 404 naming the models served
        chunk, overlap = _chunking(chunk_chars, overlap_chars)
        record = CollectionRecord(
            id=f"collection_{uuid.uuid4()}", owner=owner, name=name, description=description,
            model=model, chunk_chars=chunk, overlap_chars=overlap,
            inject_name=inject_name, field_definitions=tuple(_field_definitions(field_definitions)), created_at=0.0,
        )  # fmt: skip
        await asyncio.to_thread(self._rows.create, record)
        return await self.get(record.id, owner)

    async def get(self, collection_id: str, owner: str) -> CollectionRecord:
        record = await asyncio.to_thread(self._rows.get, collection_id, owner)
        if record is None:
            raise NotFound(NOT_FOUND)
        return record

    async def page(
        self, owner: str, limit: int, order: str, sort_by: str, token: str
    ) -> tuple[list[CollectionRecord], str]:
        _check_page(limit, order)
        records = await asyncio.to_thread(self._rows.page, owner, limit, order == "desc", sort_by, token or None)
        if records is None:
            raise InvalidArgument("pagination_token is not one of this key's collections.")
        return records, records[-1].id if records else token

    async def update(
        self, collection_id: str, owner: str, name: str | None = None, description: str | None = None,
        chunk_chars: int | None = None, overlap_chars: int | None = None,
        field_definitions: Sequence[dict[str, Any]] | None = None,
    ) -> CollectionRecord:  # fmt: skip
        record = await self.get(collection_id, owner)
        values: dict[str, Any] = {}
        if name is not None:
            if not name or len(name) > 1024:
                raise InvalidArgument("A collection needs a name of 1 to 1024 characters.")
            values["name"] = name
        if description is not None:
            values["description"] = description
        if chunk_chars is not None or overlap_chars is not None:  # for documents indexed from now on
            values["chunk_chars"], values["overlap_chars"] = _chunking(
                chunk_chars or record.chunk_chars, record.overlap_chars if overlap_chars is None else overlap_chars
            )
        if field_definitions is not None:
            values["field_definitions"] = _field_definitions(field_definitions)
        if values:
            await asyncio.to_thread(self._rows.update, collection_id, owner, **values)
        return await self.get(collection_id, owner)

    async def delete(self, collection_id: str, owner: str) -> None:
        if not await asyncio.to_thread(self._rows.delete, collection_id, owner):
            raise NotFound(NOT_FOUND)

    # -- documents ---------------------------------------------------------------------------------

    async def add_document(
        self, collection_id: str, owner: str, file_id: str, fields: dict[str, str] | None = None
    ) -> DocumentRecord:
        collection = await self.get(collection_id, owner)
        file = await self._files.get(file_id, owner)  # another key's file: not found
        fields = dict(fields or {})
        await self._check_fields(collection, fields, file_id)
        added = await asyncio.to_thread(
            self._rows.add_document, collection_id, file_id, owner, file.filename, file.bytes, fields
        )
        if not added:
            raise InvalidArgument(f"The file {file_id} is in the collection {collection_id} already.")
        self._wake.set()
        return await self.document(collection_id, owner, file_id)

    async def _check_fields(self, collection: CollectionRecord, fields: dict[str, str], file_id: str) -> None:
        known = {d["key"]: d for d in collection.field_definitions}
        if collection.field_definitions:
            unknown = sorted(set(fields) - set(known))
            if unknown:
                raise InvalidArgument(f"The collection defines no field {unknown[0]!r} (it has {', '.join(known)}).")
        for key, definition in known.items():
            if definition.get("required") and key not in fields:
                raise InvalidArgument(f"The field {key!r} is required in this collection.")
            if definition.get("unique") and key in fields:
                others = await asyncio.to_thread(self._rows.documents, collection.id)
                if any(d.fields.get(key) == fields[key] and d.file_id != file_id for d in others):
                    raise InvalidArgument(f"Another document of this collection has {key} = {fields[key]!r}.")

    async def document(self, collection_id: str, owner: str, file_id: str) -> DocumentRecord:
        await self.get(collection_id, owner)
        found = await asyncio.to_thread(self._rows.documents, collection_id, [file_id])
        if not found:
            raise NotFound(f"The document {file_id} is not in the collection {collection_id}.")
        return found[0]

    async def documents(
        self, collection_id: str, owner: str, file_ids: Sequence[str] | None = None
    ) -> list[DocumentRecord]:
        await self.get(collection_id, owner)
        if file_ids is not None and len(file_ids) > MAX_PAGE:
            raise InvalidArgument(f"Ask for at most {MAX_PAGE} documents at once, not {len(file_ids)}.")
        return await asyncio.to_thread(self._rows.documents, collection_id, file_ids)

    async def page_documents(
        self, collection_id: str, owner: str, limit: int, order: str, sort_by: str, token: str, name: str = ""
    ) -> tuple[list[DocumentRecord], str]:
        _check_page(limit, order)
        records = [d for d in await self.documents(collection_id, owner) if not name or d.name == name]
        sorts = {"name": lambda d: (d.name, d.file_id), "size": lambda d: (d.bytes, d.file_id)}
        records.sort(key=sorts.get(sort_by, lambda d: (d.created_at, d.file_id)), reverse=order == "desc")
        if token:
            ids = [d.file_id for d in records]
            if token not in ids:
                raise InvalidArgument("pagination_token is not a document of this collection.")
            records = records[ids.index(token) + 1 :]
        records = records[:limit]
        return records, records[-1].file_id if records else token

    async def documents_by_id(self, owner: str, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """The names of the documents (collection id, file id) of the owner's collections."""
        names: dict[tuple[str, str], str] = {}
        for collection_id in dict.fromkeys(c for c, _ in keys):
            if await asyncio.to_thread(self._rows.get, collection_id, owner) is None:
                continue
            wanted = [f for c, f in keys if c == collection_id]
            for document in await asyncio.to_thread(self._rows.documents, collection_id, wanted):
                names[(collection_id, document.file_id)] = document.name
        return names

    async def file_of(self, document: DocumentRecord, owner: str) -> FileRecord | None:
        try:
            return await self._files.get(document.file_id, owner)
        except NotFound:
            return None  # deleted or expired since: the document's chunks stay searchable

    async def remove_document(self, collection_id: str, owner: str, file_id: str) -> None:
        await self.get(collection_id, owner)
        if not await asyncio.to_thread(self._rows.remove_document, collection_id, file_id):
            raise NotFound(f"The document {file_id} is not in the collection {collection_id}.")

    async def update_document(
        self, collection_id: str, owner: str, file_id: str, fields: dict[str, str] | None = None, name: str = ""
    ) -> DocumentRecord:
        document = await self.document(collection_id, owner, file_id)
        values: dict[str, Any] = {}
        if fields is not None:
            await self._check_fields(await self.get(collection_id, owner), fields, file_id)
            values["fields"] = fields
        if name:
            values["name"] = name
        if values:
            await asyncio.to_thread(self._rows.update_document, collection_id, file_id, **values)
        return replace(document, **values) if values else document

    async def reindex(self, collection_id: str, owner: str, file_id: str) -> None:
        await self.document(collection_id, owner, file_id)
        await asyncio.to_thread(self._rows.reindex, collection_id, file_id)
        self._wake.set()

    # -- search ------------------------------------------------------------------------------------

    async def search(
        self, owner: str, query: str, collection_ids: Sequence[str], limit: int | None = None, mode: str = "hybrid",
        filter_text: str = "",
    ) -> list[Match]:  # fmt: skip
        if not query.strip():
            raise InvalidArgument("query must not be empty.")
        if not collection_ids:
            raise InvalidArgument("Name at least one collection to search (source.collection_ids).")
        limit = limit or SEARCH_LIMIT[1]
        if not SEARCH_LIMIT[0] <= limit <= SEARCH_LIMIT[2]:
            raise InvalidArgument(f"limit must be between {SEARCH_LIMIT[0]} and {SEARCH_LIMIT[2]}, got {limit}.")
        if mode not in MODES:
            raise InvalidArgument(f"retrieval_mode must be one of {', '.join(MODES)}, got {mode!r}.")
        owned = await asyncio.to_thread(self._rows.owned, list(dict.fromkeys(collection_ids)), owner)
        missing = sorted(set(collection_ids) - {c.id for c in owned})
        if missing:
            raise NotFound(f"Collection not found: {missing[0]}.")
        # With a filter, each collection is searched among the documents it admits there (decided before
        # ranking, so `limit` still holds); without, the collections of one model are searched together.
        groups: list[tuple[list[str], str, list[str] | None]] = []
        if filter_text:
            admits = filters.parse(filter_text)
            for collection in owned:
                documents = await asyncio.to_thread(self._rows.documents, collection.id)
                allowed = [d.file_id for d in documents if admits({**d.fields, "file_id": d.file_id, "name": d.name})]
                groups.append(([collection.id], collection.model, allowed))
        else:
            for model in dict.fromkeys(c.model for c in owned):
                groups.append(([c.id for c in owned if c.model == model], model, None))
        keyword: list[Hit] = []
        semantic: list[Hit] = []
        depth = limit if mode != "hybrid" else limit * 4
        vectors: dict[str, np.ndarray] = {}
        for ids, model, file_ids in groups:
            if mode in ("keyword", "hybrid"):
                keyword += await asyncio.to_thread(self._rows.keyword, query, ids, depth, file_ids)
            if mode in ("semantic", "hybrid"):
                if model not in vectors:  # one query vector per model the collections use
                    vectors[model] = (await self._embeddings.embed(model, [query])).vectors[0]
                semantic += await asyncio.to_thread(self._rows.semantic, vectors[model], ids, depth, file_ids)
        keyword.sort(key=lambda h: h.score, reverse=True)
        semantic.sort(key=lambda h: h.score, reverse=True)
        hits = keyword if mode == "keyword" else semantic if mode == "semantic" else _fused(keyword, semantic)
        return [Match(**vars(h), collection_ids=(h.collection_id,)) for h in hits[:limit]]

    # -- the indexer -------------------------------------------------------------------------------

    async def _index_forever(self) -> None:
        while True:
            try:
                claimed = await asyncio.to_thread(self._rows.claim, LEASE_S, MAX_ATTEMPTS)
            except LocalXAIError:  # the database is away for a while
                claimed = None
            if claimed is None:
                self._wake.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=2.0)
                continue
            try:
                await self._index(*claimed)
            except Exception:  # recording the outcome failed (the database went away): the lease runs out
                log.warning("indexing %s/%s left for a retry", claimed[0].collection_id, claimed[0].file_id,
                            exc_info=True)  # fmt: skip

    async def _index(self, document: DocumentRecord, owner: str) -> None:
        key = (document.collection_id, document.file_id)
        try:
            await asyncio.wait_for(self._index_one(document, owner), INDEX_TIMEOUT_S)
        except asyncio.TimeoutError:
            await asyncio.to_thread(self._rows.fail, *key, f"Indexing took longer than {INDEX_TIMEOUT_S:.0f} seconds.")
        except LocalXAIError as exc:
            if exc.public:
                await asyncio.to_thread(self._rows.fail, *key, exc.message)
            else:
                log.warning("indexing %s/%s failed", *key, exc_info=exc)
        except Exception:
            log.exception("indexing %s/%s failed", *key)
            await asyncio.to_thread(self._rows.fail, *key, "Indexing failed (internal error).")

    async def _index_one(self, document: DocumentRecord, owner: str) -> None:
        collection = await asyncio.to_thread(self._rows.get, document.collection_id, owner)
        if collection is None:
            return  # deleted meanwhile
        file = await self._files.get(document.file_id, owner)
        text = await self._files.text(file)
        prefix = _prefix(collection, document)
        pieces = await asyncio.to_thread(chunk, text, collection.chunk_chars, collection.overlap_chars)
        chunks = [replace(c, content=prefix + c.content) for c in pieces]
        vectors = np.empty((0, 0), dtype=np.float32)
        batches = [chunks[i : i + EMBED_BATCH] for i in range(0, len(chunks), EMBED_BATCH)]
        parts = [(await self._embeddings.embed(collection.model, [c.content for c in b])).vectors for b in batches]
        if parts:
            vectors = np.concatenate(parts)
        await asyncio.to_thread(self._rows.finish, document.collection_id, document.file_id, chunks, vectors)
        log.info("indexed %s in %s: %d chunks", document.file_id, document.collection_id, len(chunks))


def _prefix(collection: CollectionRecord, document: DocumentRecord) -> str:
    injected = [d["key"] for d in collection.field_definitions if d.get("inject_into_chunk")]
    lines = [document.name] if collection.inject_name else []
    lines += [f"{key}: {document.fields[key]}" for key in injected if key in document.fields]
    return "\n".join(lines) + "\n\n" if lines else ""


def chunk(text: str, size: int, overlap: int) -> list[Chunk]:
    """Chunks of at most `size` characters overlapping by about `overlap`, cut where the text breaks best
    (a paragraph, a line, a sentence, a space), each with its place in `text` and its page (PDF pages are
    split by form feeds; None for a text without pages)."""
    paged = PAGE_BREAK in text
    breaks = [m.start() for m in re.finditer(PAGE_BREAK, text)]
    chunks, start = [], 0
    while start < len(text):
        end = min(len(text), start + size)
        if end < len(text):
            window = text[start + size // 2 : end]
            for mark in ("\n\n", PAGE_BREAK, "\n", ". ", " "):
                at = window.rfind(mark)
                if at != -1:
                    end = start + size // 2 + at + len(mark)
                    break
        content = text[start:end].replace(PAGE_BREAK, "\n").strip()
        if content:
            page = 1 + sum(b < start for b in breaks) if paged else None
            chunks.append(Chunk(content, start, end, page))
        if end >= len(text):
            break
        start = max(end - overlap, start + 1)
        while start < end and not text[start - 1].isspace():  # begin on a word
            start += 1
    return chunks


def reciprocal_rank(*rankings: Sequence[K]) -> dict[K, float]:
    """Reciprocal rank fusion: each ranking adds 1 / (RRF_K + rank) for what it found; best first."""
    scores: dict[K, float] = {}
    for ranked in rankings:
        for rank, key in enumerate(ranked, 1):
            scores[key] = scores.get(key, 0.0) + 1.0 / (RRF_K + rank)
    return dict(sorted(scores.items(), key=lambda item: item[1], reverse=True))


def _fused(keyword: list[Hit], semantic: list[Hit]) -> list[Hit]:
    hits = {h.chunk_id: h for h in (*semantic, *keyword)}
    scores = reciprocal_rank([h.chunk_id for h in keyword], [h.chunk_id for h in semantic])
    return [replace(hits[c], score=score) for c, score in scores.items()]


def _chunking(chars: int | None, overlap: int | None) -> tuple[int, int]:
    chars = CHUNK_CHARS[1] if chars is None else chars
    overlap = min(DEFAULT_OVERLAP, chars // 4) if overlap is None else overlap
    if not CHUNK_CHARS[0] <= chars <= CHUNK_CHARS[2]:
        raise InvalidArgument(f"max_chunk_size_chars must be between {CHUNK_CHARS[0]} and {CHUNK_CHARS[2]}.")
    if not 0 <= overlap <= chars // 2:
        raise InvalidArgument("chunk_overlap_chars must be between 0 and half the chunk size.")
    return chars, overlap


def _field_definitions(definitions: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    keys = [d.get("key") for d in definitions]
    if any(not isinstance(k, str) or not k for k in keys) or len(set(keys)) != len(keys):
        raise InvalidArgument("Each field definition needs a key of its own.")
    allowed = ("key", "required", "inject_into_chunk", "unique", "description")
    return [{k: d[k] for k in allowed if k in d} for d in definitions]


def _check_page(limit: int, order: str) -> None:
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidArgument(f"limit must be between 1 and {MAX_PAGE}, got {limit}.")
    if order not in ("asc", "desc"):
        raise InvalidArgument(f"order must be asc or desc, got {order!r}.")
