"""Logging: stdlib logging, every line tagged with the request id it belongs to (or '-'), and one
summary line per request (as vLLM and Ollama log): method, route, model, status, tokens, timings."""

from __future__ import annotations

import contextvars
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from localxai.chat import Usage

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

log = logging.getLogger("localxai.requests")


@dataclass
class RequestRecord:
    """What one request did, filled in by the core as it happens; logged by the adapter at the end."""

    started: float = field(default_factory=time.monotonic)
    model: str | None = None
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    ttft_s: float | None = None

    def add(self, usage: Usage) -> None:
        self.prompt_tokens += usage.prompt_tokens
        self.cached_tokens += usage.cached_tokens
        self.completion_tokens += usage.completion_tokens
        self.reasoning_tokens += usage.reasoning_tokens

    def line(self, method: str, route: str, status: str) -> str:
        parts = [method, route, status, f"model={self.model or '-'}"]
        if self.ttft_s is not None or self.prompt_tokens:
            parts += [
                f"prompt={self.prompt_tokens}",
                f"cached={self.cached_tokens}",
                f"completion={self.completion_tokens}",
                f"reasoning={self.reasoning_tokens}",
                f"ttft_ms={round(self.ttft_s * 1000) if self.ttft_s is not None else '-'}",
            ]
        parts.append(f"duration_ms={round((time.monotonic() - self.started) * 1000)}")
        return " ".join(parts)


record: contextvars.ContextVar[RequestRecord | None] = contextvars.ContextVar("request_record", default=None)


def begin(rid: str) -> RequestRecord:
    """Tag this context's log lines with `rid` and start its record (each request runs in a task of
    its own, whose context the engine's stream inherits)."""
    request_id.set(rid)
    current = RequestRecord()
    record.set(current)
    return current


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


def configure(level: str) -> None:
    handler = logging.StreamHandler()
    handler.addFilter(_RequestIdFilter())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per upstream request is noise
