"""Server-sent events for chat completions: xAI's chunk shapes, pings while idle, one error frame."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import anyio

from localxai.chat import Finished, ReasoningDelta, TextDelta, ToolCallDelta, UsageReport
from localxai.errors import LocalXAIError
from localxai.httpapi.convert import finish_reason, logprobs_body, tool_call_body, usage_body
from localxai.httpapi.errors import error_body
from localxai.service import ChatStream

log = logging.getLogger(__name__)

PING = b": ping\n\n"
DONE = b"data: [DONE]\n\n"


def frame(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"


async def ended(frames: AsyncIterator[bytes], stream: ChatStream, request_id: str) -> AsyncIterator[bytes]:
    """How every chat-style SSE body ends: `data: [DONE]` after the frames; a failure after the first
    byte is one error frame; the generation is closed in every case (client gone included)."""
    try:
        async for piece in frames:
            yield piece
        yield DONE
    except LocalXAIError as exc:
        if not exc.public:
            log.error("stream failed after the first byte (request %s): %s", request_id, exc.message)
        yield frame(error_body(exc, request_id))
    except Exception:
        log.exception("stream failed after the first byte (request %s)", request_id)
        yield frame(error_body(None, request_id))
    finally:
        with anyio.CancelScope(shield=True):
            await stream.events.aclose()


def chat_chunks(
    stream: ChatStream, include_usage: bool, request_id: str, ping_interval: float = 10.0
) -> AsyncIterator[bytes]:
    return ended(_chat_frames(stream, include_usage, ping_interval), stream, request_id)


async def _chat_frames(stream: ChatStream, include_usage: bool, ping_interval: float) -> AsyncIterator[bytes]:
    head = {
        "id": stream.id,
        "object": "chat.completion.chunk",
        "created": stream.created,
        "model": stream.model,
    }

    def chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
        return frame({**head, "choices": choices, **extra, "system_fingerprint": stream.fingerprint})

    role_sent: set[int] = set()

    def delta(index: int, **fields: Any) -> dict[str, Any]:
        # The first chunk of each choice carries the role (xAI, OpenAI).
        if index in role_sent:
            return fields
        role_sent.add(index)
        return {**fields, "role": "assistant"}

    async for event in with_pings(stream.events, ping_interval):
        if event is None:
            yield PING
        elif isinstance(event, TextDelta):
            choice = {"index": event.index, "delta": delta(event.index, content=event.text)}
            if event.logprobs:
                choice["logprobs"] = logprobs_body(event.logprobs)
            yield chunk([choice])
        elif isinstance(event, ReasoningDelta):
            yield chunk([{"index": event.index, "delta": delta(event.index, reasoning_content=event.text)}])
        elif isinstance(event, ToolCallDelta):
            # xAI sends each call whole, in one chunk, with its position in the list.
            calls = [{**tool_call_body(c), "index": i} for i, c in enumerate(event.calls)]
            yield chunk([{"index": event.index, "delta": delta(event.index, tool_calls=calls)}])
        elif isinstance(event, Finished):
            body = {} if event.index in role_sent else delta(event.index, content="")
            yield chunk([{"index": event.index, "delta": body, "finish_reason": finish_reason(event.reason)}])
        elif isinstance(event, UsageReport) and include_usage:
            yield chunk([], usage=usage_body(event.usage))


async def with_pings(events: AsyncIterator[Any], interval: float) -> AsyncIterator[Any]:
    """Yield the events, and None whenever `interval` seconds pass without one."""
    iterator = aiter(events)
    while True:
        step = asyncio.ensure_future(anext(iterator))
        try:
            while not (await asyncio.wait({step}, timeout=interval))[0]:
                yield None
        except BaseException:
            # Client gone (or closed): stop the engine step and let it unwind before re-raising.
            step.cancel()
            with anyio.CancelScope(shield=True):  # Starlette's cancel scope would cancel the wait too
                await asyncio.gather(step, return_exceptions=True)
            raise
        try:
            yield step.result()
        except StopAsyncIteration:
            return
