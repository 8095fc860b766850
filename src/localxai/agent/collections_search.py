"""xAI's `collections_search` (gRPC) and the Responses API's `file_search` (`vector_store_ids` are
collection ids, as at xAI) on the local collections (collections.py).

The model gets one function, `collections_search(query)`, over the collections the request named: they
must be the caller's (another key's id is "not found", before any generation). A call returns the best
passages with their document and chunk; each document found is a source, cited as
`collections://<collection_id>/files/<file_id>`.
"""

from __future__ import annotations

from typing import Any

from localxai.agent.base import Outcome, Session, Toolset, arguments, config, failed, query_function
from localxai.chat import SearchResult, ServerTool, Tool, ToolCall
from localxai.collections import MODES, SEARCH_LIMIT, Collections
from localxai.errors import InvalidArgument, LocalXAIError

MAX_COLLECTIONS = 10  # xAI's cap on a file_search's vector_store_ids
FUNCTION = query_function(
    "collections_search",
    "Search the user's document collections. Returns the passages that best match the query, "
    "each with the document it comes from.",
)


def citation(collection_id: str, file_id: str) -> str:
    return f"collections://{collection_id}/files/{file_id}"


def settings(tool_kind: str, raw: dict[str, Any], where: str) -> dict[str, Any]:
    """The tool's settings from either wire's spelling, checked: {collection_ids, limit, mode}."""
    raw = dict(raw)
    ids = raw.pop("collection_ids", None) or raw.pop("vector_store_ids", None)
    limit = raw.pop("limit", None) or raw.pop("max_num_results", None) or SEARCH_LIMIT[1]
    mode = raw.pop("mode", None) or "hybrid"
    raw.pop("instructions", None)  # guidance for a reranker; none runs here
    for refused in ("filters", "ranking_options"):
        if raw.pop(refused, None):
            raise InvalidArgument(f"{where}.{refused} is not supported by localxai's {tool_kind}.")
    if raw:
        raise InvalidArgument(f"{where}: {', '.join(sorted(raw))} not supported.")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) and i for i in ids):
        raise InvalidArgument(f"{where} needs the collections to search (vector_store_ids / collection_ids).")
    if len(ids) > MAX_COLLECTIONS:
        raise InvalidArgument(f"{where} searches at most {MAX_COLLECTIONS} collections, got {len(ids)}.")
    if not isinstance(limit, int) or isinstance(limit, bool) or not SEARCH_LIMIT[0] <= limit <= SEARCH_LIMIT[2]:
        raise InvalidArgument(f"{where}: the number of results must be between 1 and {SEARCH_LIMIT[2]}.")
    if mode not in MODES:
        raise InvalidArgument(f"{where}: retrieval mode must be one of {', '.join(MODES)}.")
    return {"collection_ids": ids, "limit": limit, "mode": mode}


class CollectionsSearch:
    kinds: tuple[str, ...] = ("collections_search", "file_search")

    def __init__(self, collections: Collections) -> None:
        self._collections = collections

    async def start(self) -> None:
        return None

    def unavailable(self) -> str | None:
        return None

    async def open(self, tool: ServerTool, session: Session) -> Toolset:
        chosen = config(tool)
        owner = session.caller.key_id if session.caller is not None else ""
        for collection_id in chosen["collection_ids"]:
            await self._collections.get(collection_id, owner)  # not found: before the model runs
        return CollectionsToolset(tool.kind, self._collections, owner, chosen)


class CollectionsToolset:
    label: str | None = None
    functions: tuple[Tool, ...] = (FUNCTION,)

    def __init__(self, kind: str, collections: Collections, owner: str, chosen: dict[str, Any]) -> None:
        self.kind = kind
        self._collections, self._owner, self._chosen = collections, owner, chosen

    async def run(self, call: ToolCall) -> Outcome:
        query = arguments(call).get("query")
        if not isinstance(query, str) or not query.strip():
            return failed("collections_search needs a query")
        try:
            matches = await self._collections.search(
                self._owner, query, self._chosen["collection_ids"], self._chosen["limit"], self._chosen["mode"]
            )
        except LocalXAIError as exc:
            return failed(exc.message if exc.public else "the search failed")
        documents = await self._collections.documents_by_id(
            self._owner, [(m.collection_id, m.file_id) for m in matches]
        )
        results = tuple(
            SearchResult(m.file_id, documents.get((m.collection_id, m.file_id), m.file_id), m.chunk_id,
                         m.collection_id, m.score, m.content)
            for m in matches
        )  # fmt: skip
        if not results:
            return Outcome(output="No passage of the collections matches the query.")
        lines = [f"[{n}] {r.filename} (file {r.file_id}):\n{r.text}" for n, r in enumerate(results, 1)]
        sources = tuple(dict.fromkeys(citation(r.collection_id, r.file_id) for r in results))
        return Outcome(output="\n\n".join(lines), sources=sources, results=results)
