"""Legacy text completions (`POST /v1/completions`, spec C): a raw prompt continued without a chat
template, on the same core. xAI marks it legacy and not for reasoning models."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

from localxai.chat import (
    ChatRequest,
    Choice,
    Completion,
    Finished,
    Sampling,
    TextDelta,
    TokenLogprob,
    Usage,
    UsageReport,
)
from localxai.errors import InvalidArgument
from localxai.httpapi.convert import finish_reason
from localxai.httpapi.schema import RequestBody, StreamOptions
from localxai.httpapi.sse import PING, ended, frame, with_pings
from localxai.service import ChatStream

log = logging.getLogger(__name__)

MAX_PROMPTS = 16


class CompletionRequest(RequestBody):
    """POST /v1/completions (xAI's SampleRequest). `best_of`, `frequency_penalty`, `logit_bias` and
    `suffix` are "(Unsupported)" at xAI and ignored here too."""

    model: str
    prompt: str | list[str]
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    n: int | None = None
    stop: str | list[str] | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    seed: int | None = None
    echo: bool | None = None
    logprobs: bool | int | None = None  # a boolean at xAI, a count at OpenAI: both accepted
    presence_penalty: float | None = None
    user: str | None = None


def chat_requests(body: CompletionRequest) -> list[ChatRequest]:
    """One request per prompt (a list of prompts is answered choice block by choice block)."""
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    if not 1 <= len(prompts) <= MAX_PROMPTS:
        raise InvalidArgument(f"prompt: between 1 and {MAX_PROMPTS} prompts, got {len(prompts)}.")
    if len(prompts) > 1 and body.stream:
        raise InvalidArgument("prompt: a streamed request takes one prompt.")
    first = _chat_request(body, prompts[0])
    return [first, *(replace(first, prompt=p) for p in prompts[1:])]


def _chat_request(body: CompletionRequest, prompt: str) -> ChatRequest:
    top = body.logprobs if isinstance(body.logprobs, int) and not isinstance(body.logprobs, bool) else 0
    stop = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
    return ChatRequest(
        model=body.model,
        messages=(),
        prompt=prompt,
        sampling=Sampling(
            temperature=1.0 if body.temperature is None else body.temperature,
            top_p=1.0 if body.top_p is None else body.top_p,
            max_tokens=16 if body.max_tokens is None else body.max_tokens,  # OpenAI's legacy default
            stop=stop,
            seed=body.seed,
            presence_penalty=body.presence_penalty or 0.0,
        ),
        n=1 if body.n is None else body.n,
        stream=bool(body.stream),
        include_usage=bool(body.stream_options and body.stream_options.include_usage),
        user=body.user,
        logprobs=bool(body.logprobs),
        top_logprobs=top or None,  # a count: the core checks its range like chat's top_logprobs
    )


def completion_body(answers: list[tuple[Completion, str | None]]) -> dict[str, Any]:
    """One body for the completions of a request's prompts, each with its echo: choices numbered on
    across prompts (prompt i's choice j is i * n + j), usage summed."""
    first = answers[0][0]
    choices = [
        _choice(c, echo, number * len(completion.choices) + c.index)
        for number, (completion, echo) in enumerate(answers)
        for c in completion.choices
    ]
    usage = Usage(
        prompt_tokens=sum(c.usage.prompt_tokens for c, _ in answers),
        completion_tokens=sum(c.usage.completion_tokens for c, _ in answers),
    )
    return {
        "id": first.id,
        "object": "text_completion",
        "created": first.created,
        "model": first.model,
        "choices": choices,
        "usage": _usage(usage),
        "system_fingerprint": first.fingerprint,
    }


def _choice(choice: Choice, echo: str | None, index: int) -> dict[str, Any]:
    return {
        "index": index,
        "text": (echo or "") + choice.text,
        "finish_reason": finish_reason(choice.finish_reason),
        "logprobs": None if choice.logprobs is None else logprobs_body(choice.logprobs),
    }


def _usage(u: Usage) -> dict[str, int]:
    return {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens, "total_tokens": u.total_tokens}


def logprobs_body(entries: tuple[TokenLogprob, ...], offset: int = 0) -> dict[str, Any]:
    """The legacy shape: parallel lists, and the text offset of each token."""
    offsets, at = [], offset
    for entry in entries:
        offsets.append(at)
        at += len(entry.token)
    return {
        "tokens": [e.token for e in entries],
        "token_logprobs": [e.logprob for e in entries],
        "top_logprobs": [{t.token: t.logprob for t in e.top} for e in entries],
        "text_offset": offsets,
    }


def completion_chunks(
    stream: ChatStream, chat: ChatRequest, echo: str | None, request_id: str, ping_interval: float = 10.0
) -> AsyncIterator[bytes]:
    return ended(_frames(stream, chat, echo, ping_interval), stream, request_id)


async def _frames(
    stream: ChatStream, chat: ChatRequest, echo: str | None, ping_interval: float
) -> AsyncIterator[bytes]:
    head = {"id": stream.id, "object": "text_completion", "created": stream.created, "model": stream.model}

    def chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
        return frame({**head, "choices": choices, **extra, "system_fingerprint": stream.fingerprint})

    echoed: set[int] = set()
    async for event in with_pings(stream.events, ping_interval):
        if event is None:
            yield PING
        elif isinstance(event, TextDelta):
            text = event.text
            if echo and event.index not in echoed:
                echoed.add(event.index)
                text = echo + text
            logprobs = logprobs_body(event.logprobs) if chat.logprobs else None
            yield chunk([{"index": event.index, "text": text, "finish_reason": None, "logprobs": logprobs}])
        elif isinstance(event, Finished):
            reason = finish_reason(event.reason)
            yield chunk([{"index": event.index, "text": "", "finish_reason": reason, "logprobs": None}])
        elif isinstance(event, UsageReport) and chat.include_usage:
            yield chunk([], usage=_usage(event.usage))
