"""xAI's `mcp` tool: the tools of a remote MCP server the request names, called by the server.

A real MCP client (the `mcp` package) over Streamable HTTP, or SSE when the URL's path ends in `/sse`.
The server connects on the client's behalf, so every connection goes through the SSRF-checked transport
(media/fetch.py: loopback, private and metadata addresses refused unless the operator allows them, each
address checked just before it is connected to; the MCP client follows redirects only within the
server's origin). Connecting and listing are bounded by one deadline, each call by the loop's; a tool's
answer is capped (base.capped, with a note), an MCP server's error is the failed call's message.

The listing of a server's tools is kept LIST_TTL_S seconds per URL and credentials; the connection
lives for one response (the loop's session) and is closed when it ends.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from contextlib import AsyncExitStack
from typing import Any

import httpx2
from mcp import MCPError
from mcp.client.session import ClientSession
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

from localxai.agent.base import Outcome, Session, Toolset, arguments, config, failed, hosted
from localxai.chat import ServerTool, Tool, ToolCall
from localxai.errors import InvalidArgument
from localxai.media.fetch import FetchPolicy, pinned_transport

log = logging.getLogger(__name__)

LIST_TTL_S = 60.0
CONNECT_TIMEOUT_S = 15.0  # connecting, initializing and listing together
MAX_TOOLS = 128  # tools one server may offer the model
MAX_RESPONSE_BYTES = 4 * 1024 * 1024  # one SSE event of the server's
MAX_SESSION_BYTES = 32 * 1024 * 1024  # everything one server sends in one response's session


class RemoteMcp:
    kinds: tuple[str, ...] = ("mcp",)

    def __init__(self, policy: FetchPolicy, call_timeout_s: float = 60.0) -> None:
        self._policy = policy
        self._call_timeout_s = call_timeout_s
        self._listings: dict[str, tuple[float, list[Any]]] = {}

    async def start(self) -> None:
        return None

    def unavailable(self) -> str | None:
        return None

    async def open(self, tool: ServerTool, session: Session) -> Toolset:
        settings = config(tool)
        url, label = settings["server_url"], settings.get("server_label") or ""
        headers = dict(settings.get("headers") or {})
        if "authorization" in settings:  # the token, as OpenAI's field is; sent as a bearer credential
            token = settings["authorization"]
            headers["Authorization"] = token if token.lower().startswith(("bearer ", "basic ")) else f"Bearer {token}"
        name = label or url
        exits = AsyncExitStack()
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                client = await hosted(self._session(url, headers, name), exits)
                listed = await self._listing(client, url, headers, name)
        except TimeoutError:
            await exits.aclose()
            raise InvalidArgument(f"MCP server {name}: no answer within {CONNECT_TIMEOUT_S:g} s.") from None
        except InvalidArgument:
            await exits.aclose()
            raise
        except Exception as exc:  # a refused URL, a broken server, malformed JSON-RPC: the client's to fix
            await exits.aclose()
            log.info("MCP server %s failed: %r", name, exc, exc_info=True)
            raise InvalidArgument(f"MCP server {name}: {_why(exc, f'MCP server {name}')}") from None
        session.exits.push_async_callback(exits.aclose)
        allowed = settings.get("allowed_tools")
        offered = [t for t in listed if allowed is None or t.name in allowed]
        if len(offered) > MAX_TOOLS:
            raise InvalidArgument(f"MCP server {name} offers {len(offered)} tools; at most {MAX_TOOLS} are served.")
        description = settings.get("server_description") or ""
        return McpToolset(client, label or None, offered, description)

    def _session(self, url: str, headers: dict[str, str], name: str) -> Any:
        policy, label = self._policy, f"MCP server {name}"

        def factory(
            headers: dict[str, str] | None = None, timeout: httpx2.Timeout | None = None, auth: Any = None
        ) -> httpx2.AsyncClient:
            transport = pinned_transport(httpx2, policy, label, MAX_SESSION_BYTES)
            return httpx2.AsyncClient(
                transport=transport, headers=headers, timeout=timeout or httpx2.Timeout(30.0), auth=auth,
                trust_env=False,
            )  # fmt: skip

        return _Connected(url, headers, factory)

    async def _listing(self, client: ClientSession, url: str, headers: dict[str, str], name: str) -> list[Any]:
        key = hashlib.sha256(json.dumps([url, sorted(headers.items())]).encode()).hexdigest()
        cached = self._listings.get(key)
        if cached is not None and time.monotonic() - cached[0] < LIST_TTL_S:
            return cached[1]
        tools: list[Any] = []
        cursor = None
        for _page in range(16):
            result = await client.list_tools(params=None if cursor is None else _page_params(cursor))
            tools += result.tools
            cursor = result.next_cursor
            if cursor is None or len(tools) > MAX_TOOLS:
                break
        self._listings = {k: v for k, v in self._listings.items() if time.monotonic() - v[0] < LIST_TTL_S}
        self._listings[key] = (time.monotonic(), tools)
        return tools


def _page_params(cursor: str) -> Any:
    from mcp import types

    return types.PaginatedRequestParams(cursor=cursor)


class _Connected:
    """An initialized MCP client session over the URL's transport, as one async context."""

    def __init__(self, url: str, headers: dict[str, str], factory: Any) -> None:
        self._url, self._headers, self._factory = url, headers, factory
        self._stack = AsyncExitStack()

    async def __aenter__(self) -> ClientSession:
        stack = self._stack
        try:
            if self._url.rstrip("/").endswith("/sse"):
                streams = await stack.enter_async_context(
                    sse_client(self._url, headers=self._headers, httpx_client_factory=self._factory)
                )
            else:
                http = await stack.enter_async_context(self._factory(headers=self._headers))
                streams = await stack.enter_async_context(
                    streamable_http_client(self._url, http_client=http, max_sse_event_size=MAX_RESPONSE_BYTES)
                )
            read, write = streams[0], streams[1]
            client = await stack.enter_async_context(ClientSession(read, write))
            await client.initialize()
            return client
        except BaseException:
            await stack.aclose()
            raise

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self._stack.aclose()
        except Exception as error:  # a server that breaks while we hang up: nothing to tell anyone
            log.debug("closing an MCP session: %r", error)


class McpToolset:
    kind = "mcp"

    def __init__(self, client: ClientSession, label: str | None, tools: list[Any], description: str) -> None:
        self._client = client
        self.label = label
        prefix = f"{description.strip()} " if description.strip() else ""
        self.functions: tuple[Tool, ...] = tuple(
            Tool(
                name=t.name,
                description=(prefix + (t.description or "")).strip(),
                parameters=json.dumps(t.input_schema or {"type": "object", "properties": {}}),
            )
            for t in tools
        )

    async def run(self, call: ToolCall) -> Outcome:
        try:
            result = await self._client.call_tool(call.name, arguments(call))
        except MCPError as exc:  # the MCP server's own error (or its broken stream), in its words
            return failed(f"the MCP server answered an error: {str(exc.error.message)[:500]}")
        text = "\n".join(_text(block) for block in result.content)
        if not text and result.structured_content is not None:
            text = json.dumps(result.structured_content)
        if result.is_error:
            return failed(text or f"{call.name} failed on the MCP server")
        return Outcome(text)


def _text(block: Any) -> str:
    kind = getattr(block, "type", "")
    if kind == "text":
        return str(block.text)
    if kind == "resource" and hasattr(block.resource, "text"):
        return str(block.resource.text)
    return f"[{kind} content]"


def _why(exc: BaseException, name: str) -> str:
    """A message for the client: ours as it is, an MCP or HTTP failure by its kind (never a traceback)."""
    while getattr(exc, "exceptions", None):  # the MCP client's task groups wrap what failed
        exc = exc.exceptions[0]  # type: ignore[attr-defined]
    if isinstance(exc, InvalidArgument):  # the fetcher's refusal, which names the server itself
        return exc.message.removeprefix(f"{name}: ")
    if isinstance(exc, httpx2.HTTPStatusError):
        return f"it answered HTTP {exc.response.status_code}."
    if isinstance(exc, httpx2.HTTPError):
        return f"cannot connect ({type(exc).__name__})."
    return f"it did not speak MCP ({type(exc).__name__})."
