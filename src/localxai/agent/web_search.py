"""xAI's `web_search` tool on a self-hosted search backend: SearXNG's JSON API (`--web-search-url`).

The model gets xAI's two functions: `web_search` (results with title, URL and snippet) and `browse_page`
(a page's main text, extracted by trafilatura). The search backend is the operator's and is asked
directly; pages are the internet's and go through the SSRF-checked fetcher (media/fetch.py: private
addresses refused unless `--tool-allow-private`, every redirect re-checked, size and time bounded).
`allowed_domains` / `excluded_domains` hold for both: results outside them are dropped, pages outside
them are not fetched. Every URL a call returned or read is a source: the answer's citations.
`external_web_access: false` (Codex) offers search results only, no page fetches.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlsplit

import httpx
import trafilatura

from localxai.agent.base import Outcome, Session, Toolset, arguments, config, failed
from localxai.chat import ServerTool, Tool, ToolCall
from localxai.errors import InvalidArgument
from localxai.media.fetch import FetchPolicy, fetch

MAX_RESULTS = 10
SEARCH_TIMEOUT_S = 15.0
MAX_PAGE_BYTES = 5 * 1024 * 1024
SEARCH = Tool(
    name="web_search",
    description="Search the web. Returns the top results with their title, URL and a snippet.",
    parameters=json.dumps(
        {
            "type": "object",
            "properties": {
                "query": {"type": "string", "description": "What to search for."},
                "num_results": {"type": "integer", "minimum": 1, "maximum": MAX_RESULTS},
            },
            "required": ["query"],
        }
    ),
)
BROWSE = Tool(
    name="browse_page",
    description="Read a web page: returns its main text.",
    parameters=json.dumps(
        {
            "type": "object",
            "properties": {"url": {"type": "string", "description": "The page's URL."}},
            "required": ["url"],
        }
    ),
)


class SearxngSearch:
    kinds: tuple[str, ...] = ("web_search",)

    def __init__(self, url: str, page_policy: FetchPolicy) -> None:
        self._url = url.rstrip("/")
        self._policy = page_policy

    async def start(self) -> None:
        return None

    def unavailable(self) -> str | None:
        return None

    async def open(self, tool: ServerTool, session: Session) -> Toolset:
        settings = config(tool)
        return WebToolset(self._url, self._policy, settings)


class WebToolset:
    kind = "web_search"
    label: str | None = None

    def __init__(self, url: str, policy: FetchPolicy, settings: dict[str, Any]) -> None:
        self._url, self._policy = url, policy
        self._allowed = tuple(settings.get("allowed_domains") or ())
        self._excluded = tuple(settings.get("excluded_domains") or ())
        browse = settings.get("external_web_access", True)
        self.functions: tuple[Tool, ...] = (SEARCH, BROWSE) if browse else (SEARCH,)

    async def run(self, call: ToolCall) -> Outcome:
        args = arguments(call)
        if call.name == "browse_page":
            return await self._browse(args)
        return await self._search(args)

    def _admits(self, url: str) -> bool:
        host = (urlsplit(url).hostname or "").lower().rstrip(".")

        def within(domain: str) -> bool:
            domain = domain.lower().strip(".")
            return host == domain or host.endswith("." + domain)

        if self._allowed and not any(within(d) for d in self._allowed):
            return False
        return not any(within(d) for d in self._excluded)

    async def _search(self, args: dict[str, Any]) -> Outcome:
        query = args.get("query")
        if not isinstance(query, str) or not query.strip():
            return failed("web_search takes a non-empty string `query`")
        count = args.get("num_results", 5)
        count = max(1, min(MAX_RESULTS, count if isinstance(count, int) else 5))
        if len(self._allowed) == 1:
            query = f"{query} site:{self._allowed[0]}"
        try:
            async with httpx.AsyncClient(timeout=SEARCH_TIMEOUT_S, trust_env=False) as client:
                response = await client.get(f"{self._url}/search", params={"q": query, "format": "json"})
            response.raise_for_status()
            results = response.json().get("results")
        except (httpx.HTTPError, ValueError, AttributeError):
            return failed("the search backend did not answer (the server's operator can check --web-search-url)")
        if not isinstance(results, list):
            return failed("the search backend answered no results list")
        kept = []
        for result in results:
            if not isinstance(result, dict) or not isinstance(result.get("url"), str):
                continue
            if self._admits(result["url"]) and result["url"].startswith(("http://", "https://")):
                kept.append(result)
            if len(kept) == count:
                break
        if not kept:
            return Outcome(f"No results for {query!r}.")
        lines = []
        for i, r in enumerate(kept, 1):
            lines.append(f"[{i}] {r.get('title') or r['url']}\nURL: {r['url']}\n{r.get('content') or ''}".strip())
        return Outcome("\n\n".join(lines), sources=tuple(r["url"] for r in kept))

    async def _browse(self, args: dict[str, Any]) -> Outcome:
        url = args.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            return failed("browse_page takes an http(s) `url`")
        if not self._admits(url):
            return failed(f"{url} is outside the domains this search may use")
        try:
            page = await fetch(url, self._policy, "browse_page", accept="text/html, text/plain;q=0.9, */*;q=0.1")
        except InvalidArgument as exc:
            return failed(exc.message)
        if not self._admits(page.url):
            return failed(f"{url} redirected outside the domains this search may use")
        kind = page.content_type.split(";")[0].strip().lower()
        text = page.body.decode("utf-8", "replace")
        if kind in ("", "text/html", "application/xhtml+xml"):
            text = await asyncio.to_thread(_main_text, text)
        elif not kind.startswith("text/") and kind not in ("application/json", "application/xml"):
            return failed(f"{url} is {kind}, not a page with text")
        return Outcome(text or "The page has no readable text.", sources=(page.url,))


def _main_text(html: str) -> str:
    return trafilatura.extract(html, include_comments=False) or ""
