"""Per-key model access, rate limits (requests and tokens per minute) and the usage ledger."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable

from localxai.auth import ApiKey
from localxai.chat import Usage
from localxai.errors import PermissionDenied, ResourceExhausted
from localxai.store.store import TOOLS_API, Store

log = logging.getLogger(__name__)


class Accounting:
    def __init__(self, store: Store | None, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock  # wall-clock seconds: limits count per clock minute

    @staticmethod
    def check_access(caller: ApiKey | None, model: str) -> None:
        if caller is not None and not caller.may_use(model):
            raise PermissionDenied(f"The API key {caller.redacted} is not allowed to use model {model}.")

    async def admit(self, caller: ApiKey | None, model: str) -> None:
        """Check the caller may use `model` now, and count the request against its limits."""
        self.check_access(caller, model)
        if caller is None:
            return
        if self._store is None or (caller.rpm is None and caller.tpm is None):
            return
        now = self._clock()
        window = int(now // 60)
        allowed = await asyncio.to_thread(self._store.reserve_request, caller.key_id, window, caller.rpm, caller.tpm)
        if not allowed:
            limits = ", ".join(
                f"{value} {unit} per minute"
                for value, unit in ((caller.rpm, "requests"), (caller.tpm, "tokens"))
                if value is not None
            )
            retry = max(1.0, math.ceil((window + 1) * 60 - now))
            raise ResourceExhausted(f"Rate limit reached for API key {caller.redacted}: {limits}.", retry_after=retry)

    async def record(self, key_id: str | None, model: str, usage: Usage, latency_s: float, api: str) -> None:
        """Ledger entry and token count; a failing database must not break a finished answer."""
        if self._store is None or key_id is None:
            return
        tokens = usage.prompt_tokens + usage.completion_tokens + usage.reasoning_tokens
        try:
            await asyncio.to_thread(
                self._store.record_usage,
                key_id=key_id,
                model=model,
                api=api,
                prompt_tokens=usage.prompt_tokens,
                cached_tokens=usage.cached_tokens,
                image_tokens=usage.image_tokens,
                completion_tokens=usage.completion_tokens,
                reasoning_tokens=usage.reasoning_tokens,
                latency_ms=latency_s * 1000,
            )
            # Tokens count in the minute they were spent in (a no-op for keys without limits).
            await asyncio.to_thread(self._store.add_tokens, key_id, int(self._clock() // 60), tokens)
        except Exception:
            log.exception("could not record usage for key %s", key_id)

    async def record_server_tools(self, key_id: str | None, model: str, calls: int) -> None:
        """A tool loop's server-side calls (the completed ones, as xAI bills them), in a ledger row of their
        own: the loop's model turns have their rows, each also counted against the key's limits."""
        if self._store is None or key_id is None or not calls:
            return
        try:
            await asyncio.to_thread(
                self._store.record_usage, key_id=key_id, model=model, api=TOOLS_API, prompt_tokens=0,
                cached_tokens=0, image_tokens=0, completion_tokens=0, reasoning_tokens=0, latency_ms=0.0,
                server_tool_calls=calls,
            )  # fmt: skip
        except Exception:
            log.exception("could not record server-side tool calls for key %s", key_id)
