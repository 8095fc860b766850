"""xAI's `attachment_search`: the documents attached to a conversation, searched by the model.

Added by the server when an attached file is too long to put in the prompt (attachments.plan), or asked for
by the client (gRPC `attachment_search{limit}`). The toolset indexes the attached files of the request on
its first call, in memory for the length of the response: their text (documents.py, read once and kept with
the file) cut as collections cut it, embedded with the default embedding model; a query ranks the passages
by reciprocal rank fusion of cosine similarity and a BM25 keyword score, and names each one's file and page.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from dataclasses import dataclass

import numpy as np

from localxai.agent.base import Outcome, Session, Toolset, arguments, config, failed, query_function
from localxai.chat import SearchResult, ServerTool, Tool, ToolCall
from localxai.collections import CHUNK_CHARS, DEFAULT_OVERLAP, chunk, reciprocal_rank
from localxai.embeddings import DEFAULT_EMBEDDING_MODEL, MAX_INPUTS, Embeddings
from localxai.errors import InvalidArgument, LocalXAIError
from localxai.files import Files
from localxai.store.collections import WORD

FUNCTION = query_function(
    "attachment_search",
    "Search the files attached to this conversation. Returns the passages that best match the "
    "query, each with its file and page.",
)


MAX_LIMIT = 50


def attachment_settings(limit: object, where: str) -> dict[str, int]:
    """The client's settings of the tool (only `limit`); the files are always the request's attachments."""
    if limit is None:
        return {}
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LIMIT:
        raise InvalidArgument(f"{where}.limit must be a number from 1 to {MAX_LIMIT}.")
    return {"limit": limit}


@dataclass(frozen=True)
class _Passage:
    file_id: str
    filename: str
    seq: int
    page: int | None
    text: str
    terms: Counter[str]


class AttachmentSearch:
    kinds: tuple[str, ...] = ("attachment_search",)

    def __init__(self, files: Files, embeddings: Embeddings) -> None:
        self._files, self._embeddings = files, embeddings

    async def start(self) -> None:
        return None

    def unavailable(self) -> str | None:
        return None

    async def open(self, tool: ServerTool, session: Session) -> Toolset:
        settings = config(tool)
        owner = session.caller.key_id if session.caller is not None else ""
        return AttachmentToolset(self._files, self._embeddings, owner, settings.get("file_ids") or [],
                                 int(settings.get("limit") or 10))  # fmt: skip


class AttachmentToolset:
    kind = "attachment_search"
    label: str | None = None
    functions: tuple[Tool, ...] = (FUNCTION,)

    def __init__(self, files: Files, embeddings: Embeddings, owner: str, file_ids: list[str], limit: int) -> None:
        self._files, self._embeddings, self._owner = files, embeddings, owner
        self._file_ids, self._limit = file_ids, max(1, min(limit, MAX_LIMIT))
        self._index: tuple[list[_Passage], np.ndarray, dict[str, float]] | None = None
        self._lock = asyncio.Lock()

    async def run(self, call: ToolCall) -> Outcome:
        query = arguments(call).get("query")
        if not isinstance(query, str) or not query.strip():
            return failed("attachment_search needs a query")
        if not self._file_ids:
            return failed("no file is attached to this conversation")
        try:
            passages, vectors, idf = await self._indexed()
            asked = (await self._embeddings.embed(DEFAULT_EMBEDDING_MODEL, [query])).vectors[0]
        except LocalXAIError as exc:
            return failed(exc.message if exc.public else "the search failed")
        if not passages:
            return Outcome(output="The attached files hold no text.")
        semantic = np.argsort(-(vectors @ asked))[: self._limit * 4].tolist()
        keyword = _bm25(query, passages, idf)[: self._limit * 4]
        fused = reciprocal_rank(semantic, keyword)
        best = list(fused)[: self._limit]
        results = tuple(
            SearchResult(passages[i].file_id, passages[i].filename, f"{passages[i].file_id}:{passages[i].seq}", "",
                         fused[i], passages[i].text)
            for i in best
        )  # fmt: skip
        lines = [
            f"[{n}] {passages[i].filename}" + (f", page {passages[i].page}" if passages[i].page else "")
            + f":\n{passages[i].text}"
            for n, i in enumerate(best, 1)
        ]  # fmt: skip
        return Outcome(output="\n\n".join(lines), results=results)

    async def _indexed(self) -> tuple[list[_Passage], np.ndarray, dict[str, float]]:
        async with self._lock:
            if self._index is None:
                passages: list[_Passage] = []
                for file_id in self._file_ids:
                    record = await self._files.get(file_id, self._owner)
                    text = await self._files.text(record)
                    pieces = await asyncio.to_thread(chunk, text, CHUNK_CHARS[1], DEFAULT_OVERLAP)
                    for seq, piece in enumerate(pieces):
                        terms = Counter(WORD.findall(piece.content.lower()))
                        passages.append(_Passage(file_id, record.filename, seq, piece.page, piece.content, terms))
                parts = [
                    (await self._embeddings.embed(DEFAULT_EMBEDDING_MODEL, [p.text for p in batch])).vectors
                    for batch in (passages[i : i + MAX_INPUTS] for i in range(0, len(passages), MAX_INPUTS))
                ]
                vectors = np.concatenate(parts) if parts else np.zeros((0, 1), dtype=np.float32)
                documents = Counter(term for p in passages for term in p.terms)
                count = len(passages)
                idf = {t: math.log(1 + (count - n + 0.5) / (n + 0.5)) for t, n in documents.items()}
                self._index = (passages, vectors, idf)
            return self._index


def _bm25(query: str, passages: list[_Passage], idf: dict[str, float], k1: float = 1.2, b: float = 0.75) -> list[int]:
    """Passages holding a query word, best first by BM25."""
    words = set(WORD.findall(query.lower()))
    mean = sum(sum(p.terms.values()) for p in passages) / max(1, len(passages))
    scores: dict[int, float] = {}
    for index, passage in enumerate(passages):
        length = sum(passage.terms.values())
        score = 0.0
        for word in words & passage.terms.keys():
            tf = passage.terms[word]
            score += idf.get(word, 0.0) * tf * (k1 + 1) / (tf + k1 * (1 - b + b * length / max(mean, 1)))
        if score > 0:
            scores[index] = score
    return sorted(scores, key=lambda i: scores[i], reverse=True)
