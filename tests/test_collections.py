"""Collections core (collections.py, store/collections.py) on SQLite and PostgreSQL, with the real default
embedding model: indexing in the background with its status, chunks that know their place, keyword,
semantic and hybrid search ranking the right chunk first, ownership, removal, restart."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

import pytest

from localxai.collections import Collections, chunk
from localxai.embeddings import Embeddings, WordLlamaEmbedder
from localxai.errors import InvalidArgument, NotFound
from localxai.files import Files
from localxai.store.store import Store

EMBEDDER = WordLlamaEmbedder()
DOCS = {
    "bread.txt": "To bake bread, knead flour, water, salt and yeast, then let the dough rise for two hours "
    "before baking it in a hot oven.",
    "cats.txt": "The kitten sleeps on the sunny windowsill for most of the afternoon, purring quietly.",
    "tax.txt": "Quarterly revenue rose twelve percent; the company paid its corporate taxes in March.",
}


async def pieces(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def indexed(collections: Collections, collection_id: str, owner: str, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while any(d.status == "processing" for d in await collections.documents(collection_id, owner)):
        assert asyncio.get_running_loop().time() < deadline, "indexing did not finish"
        await asyncio.sleep(0.05)


async def setup(db_url: str) -> tuple[Store, Files, Collections]:
    store = Store(db_url)
    files = Files(store)
    collections = Collections(store, files, Embeddings([EMBEDDER]))
    await collections.start()
    return store, files, collections


async def test_index_and_search_every_mode(db_url: str) -> None:
    store, files, collections = await setup(db_url)
    try:
        made = await collections.create("alice", "notes")
        ids = {}
        for name, text in DOCS.items():
            file = await files.upload("alice", name, pieces(text.encode()))
            ids[name] = file.id
            document = await collections.add_document(made.id, "alice", file.id, {})
            assert document.status in ("processing", "processed")
        await indexed(collections, made.id, "alice")
        documents = await collections.documents(made.id, "alice")
        assert {d.status for d in documents} == {"processed"} and all(d.chunks == 1 for d in documents)
        assert (await collections.get(made.id, "alice")).documents == 3
        for mode, query, expected in (
            ("keyword", "dough yeast oven", "bread.txt"),
            ("semantic", "a cat napping in the sun", "cats.txt"),
            ("hybrid", "corporate taxes and revenue", "tax.txt"),
            ("hybrid", "baking bread", "bread.txt"),
        ):
            matches = await collections.search("alice", query, [made.id], limit=3, mode=mode)
            assert matches and matches[0].file_id == ids[expected], (mode, query, matches)
            assert matches[0].collection_ids == (made.id,) and matches[0].chunk_id.startswith("chunk_")
        keyword = await collections.search("alice", "dough", [made.id], mode="keyword")
        assert [m.file_id for m in keyword] == [ids["bread.txt"]]  # keyword finds only what holds the word
        with pytest.raises(NotFound):
            await collections.search("bob", "bread", [made.id])  # another key's collection
        with pytest.raises(NotFound):
            await collections.get(made.id, "bob")
        with pytest.raises(NotFound):  # another key's file cannot be added
            await collections.add_document(made.id, "bob", ids["cats.txt"])
        with pytest.raises(InvalidArgument):
            await collections.add_document(made.id, "alice", ids["cats.txt"])  # there already
        await collections.remove_document(made.id, "alice", ids["bread.txt"])
        left = await collections.search("alice", "dough yeast", [made.id], mode="keyword")
        assert ids["bread.txt"] not in [m.file_id for m in left]
        await collections.delete(made.id, "alice")
        with pytest.raises(NotFound):
            await collections.search("alice", "kitten", [made.id])
    finally:
        await collections.close()
        store.close()


async def test_failures_are_visible_and_restart_resumes(db_url: str) -> None:
    store, files, collections = await setup(db_url)
    await collections.close()  # no indexer: the document waits, as after a crash
    made = await collections.create("alice", "resume")
    good = await files.upload("alice", "a.txt", pieces(b"The lighthouse keeper logs every passing ship."))
    bad = await files.upload("alice", "b.bin", pieces(bytes(range(256))))
    await collections.add_document(made.id, "alice", good.id)
    await collections.add_document(made.id, "alice", bad.id)
    assert {d.status for d in await collections.documents(made.id, "alice")} == {"processing"}
    store.close()
    store, files, collections = await setup(db_url)  # "restarted": the indexer picks the queue up
    try:
        await indexed(collections, made.id, "alice")
        states = {d.file_id: d for d in await collections.documents(made.id, "alice")}
        assert states[good.id].status == "processed"
        assert states[bad.id].status == "failed" and "neither text nor a PDF" in (states[bad.id].error or "")
        hits = await collections.search("alice", "lighthouse ship", [made.id])
        assert hits[0].file_id == good.id
    finally:
        await collections.close()
        store.close()


def test_chunks_know_their_place() -> None:
    text = "First page. " * 50 + "\f" + "Second page words. " * 80
    chunks = chunk(text, 300, 50)
    assert len(chunks) > 3 and all(len(c.content) <= 300 for c in chunks)
    for c in chunks:
        assert c.content.replace("\n", "\f").strip() in text[c.start_char : c.end_char].replace("\n", "\f")
    assert chunks[0].page == 1 and chunks[-1].page == 2
    assert all(b.start_char < a.end_char for a, b in itertools.pairwise(chunks))  # they overlap
    assert chunk("no pages here", 300, 50)[0].page is None
    assert chunk("", 300, 50) == []


def test_postgresql_with_pgvector_searches_in_the_database(pg_url: str) -> None:
    """Where the PostgreSQL server has pgvector (CI builds it), semantic search runs in the database."""
    import psycopg

    from localxai.store.collections import CollectionRows

    from conftest import PG_URL

    with psycopg.connect(PG_URL) as conn:
        available = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'").fetchone()
    store = Store(pg_url)
    try:
        assert CollectionRows(store).vectors_in_database == (available is not None)
    finally:
        store.close()


async def test_attachment_search_finds_the_passage(db_url: str) -> None:
    from localxai.agent.attachment_search import AttachmentToolset
    from localxai.chat import ToolCall

    store = Store(db_url)
    files = Files(store)
    try:
        filler = "".join(f"Section {n}: the committee discussed budgets, rooms and schedules.\n" for n in range(400))
        text = filler[:9000] + "The vault combination is 8142.\n" + filler[9000:]
        made = await files.upload("alice", "minutes.txt", pieces(text.encode()))
        toolset = AttachmentToolset(files, Embeddings([EMBEDDER]), "alice", [made.id], 3)
        outcome = await toolset.run(ToolCall("c1", "attachment_search", '{"query": "vault combination"}'))
        assert outcome.error is None and "8142" in outcome.results[0].text
        assert outcome.output.startswith("[1] minutes.txt")
        other = AttachmentToolset(files, Embeddings([EMBEDDER]), "bob", [made.id], 3)  # not bob's file
        refused = await other.run(ToolCall("c2", "attachment_search", '{"query": "vault"}'))
        assert refused.error is not None and "File not found" in refused.error
    finally:
        store.close()


async def test_a_document_that_never_finishes_indexing_fails_in_time(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import localxai.collections as module

    class Stuck:
        info = EMBEDDER.info

        def count(self, texts: list[str]) -> list[int]:
            return [1 for _ in texts]

        def embed(self, texts: list[str]) -> object:
            import time

            time.sleep(3)  # far past the (shortened) indexing limit
            raise AssertionError("not reached in time")

    monkeypatch.setattr(module, "INDEX_TIMEOUT_S", 0.5)
    store = Store(db_url)
    files = Files(store)
    collections = Collections(store, files, Embeddings([Stuck()]))  # type: ignore[list-item]
    await collections.start()
    try:
        made = await collections.create("alice", "stuck")
        file = await files.upload("alice", "a.txt", pieces(b"words to embed"))
        await collections.add_document(made.id, "alice", file.id)
        await indexed(collections, made.id, "alice", timeout=10)
        [document] = await collections.documents(made.id, "alice")
        assert document.status == "failed" and "longer than" in (document.error or "")
    finally:
        await collections.close()
        store.close()
