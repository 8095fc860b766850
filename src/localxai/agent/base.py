"""What an executor of server-side tools provides to the agent loop.

An `Executor` serves one kind of xAI tool (`code_execution`, `mcp`, `web_search`, ...). For each request
that enables its tool it opens a `Toolset`: the functions the model may call and the code that runs a
call. Everything a toolset holds for the request (a sandbox, an MCP session) lives on the `Session`'s
exit stack and is released when the loop ends, however it ends.
"""

from __future__ import annotations

import asyncio
import json
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from localxai.auth import ApiKey
from localxai.chat import SearchResult, ServerTool, Tool, ToolCall
from localxai.errors import InvalidArgument

T = TypeVar("T")

MAX_DOMAINS = 5  # xAI's cap on a web search's allowed or excluded domains
MAX_OUTPUT_CHARS = 20_000  # what one call hands the model at most; the rest is cut with a note saying so


@dataclass(frozen=True)
class Outcome:
    """What a call gave: `output` is what the model reads; `error` makes the call failed."""

    output: str
    error: str | None = None
    sources: tuple[str, ...] = ()
    results: tuple[SearchResult, ...] = ()  # collections search: what it found, for the client's item


def failed(message: str) -> Outcome:
    return Outcome(output=f"Error: {message}", error=message)


async def hosted(context: AbstractAsyncContextManager[T], exits: AsyncExitStack) -> T:
    """Enter `context` in a task of its own, which also exits it once `exits` closes.

    A loop is opened by the request's handler and ended by whichever task runs its stream to the end (a
    streaming response's, or a cancelled one's). An anyio cancel scope, such as the task group of an MCP
    client's transport, must be left by the task that entered it, or it cancels the wrong task.
    """
    entered: asyncio.Future[T] = asyncio.get_running_loop().create_future()
    leave = asyncio.Event()

    async def host() -> None:
        try:
            async with context as value:
                entered.set_result(value)
                await leave.wait()
        except BaseException as exc:
            if not entered.done():
                entered.set_exception(exc)
            elif not isinstance(exc, (Exception, asyncio.CancelledError)):
                raise

    task = asyncio.create_task(host())

    async def close() -> None:
        leave.set()
        await asyncio.gather(task, return_exceptions=True)

    try:
        value = await asyncio.shield(entered)
    except BaseException:
        task.cancel()
        await close()
        raise
    exits.push_async_callback(close)
    return value


@dataclass
class Session:
    """One run of the loop (one response): who asked, and what its toolsets must release at the end."""

    caller: ApiKey | None
    exits: AsyncExitStack = field(default_factory=AsyncExitStack)


class Toolset(Protocol):
    kind: str
    label: str | None  # mcp: the server's label, shown on its calls
    functions: tuple[Tool, ...]  # the model-side functions, as the model sees them

    async def run(self, call: ToolCall) -> Outcome: ...


class Executor(Protocol):
    kinds: tuple[str, ...]  # the ServerTool kinds it serves

    async def start(self) -> None:
        """Check once, at server start, that it can work here."""
        ...

    def unavailable(self) -> str | None:
        """Why this server cannot run the tool (a missing backend or program), None when it can."""
        ...

    async def open(self, tool: ServerTool, session: Session) -> Toolset: ...


def query_function(name: str, description: str) -> Tool:
    """A search function of one non-empty `query` (the collections and attachment searches)."""
    query = {"type": "string", "minLength": 1, "description": "What to look for, in a few words."}
    schema = {"type": "object", "properties": {"query": query}, "required": ["query"]}
    return Tool(name=name, description=description, parameters=json.dumps(schema))


def config(tool: ServerTool) -> dict[str, Any]:
    value = json.loads(tool.config)
    assert isinstance(value, dict)
    return value


def arguments(call: ToolCall) -> dict[str, Any]:
    """A call's arguments as an object; a client error in the model's own words when they are not."""
    try:
        value = json.loads(call.arguments or "{}")
    except json.JSONDecodeError:
        raise InvalidArgument(f"the arguments of {call.name} are not JSON") from None
    if not isinstance(value, dict):
        raise InvalidArgument(f"the arguments of {call.name} must be a JSON object")
    return value


def capped(text: str, limit: int = MAX_OUTPUT_CHARS) -> str:
    """`text`, or its first `limit` characters and a line saying how much was left out (never silently)."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}\n[output truncated: {len(text) - limit} more characters]"
