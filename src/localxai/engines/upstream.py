"""UpstreamEngine: models served by existing engines (vLLM, SGLang, llama-server, another localxai)
through their OpenAI-compatible Chat Completions API, with replicas.

localxai stays the front door (xAI shapes, keys, limits, deferred, usage, gRPC); this module routes
and watches replicas, upstream_wire.py translates to and from the OpenAI dialect. Replicas are
balanced by least outstanding requests, checked actively (GET /health) and ejected passively on
connection errors; a request that failed before its first byte is retried on another replica.
Closing the event stream closes the upstream request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import weakref
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx

from localxai.chat import (
    Event,
    ModelInfo,
    ReasoningDelta,
    Replicas,
    TextDelta,
    Token,
    Usage,
    UsageReport,
)
from localxai.engines import upstream_wire
from localxai.engines.base import Engine, GenerationRequest
from localxai.errors import InvalidArgument, Unavailable
from localxai.specs import UpstreamModel

log = logging.getLogger(__name__)

EJECT_S = 10.0


@dataclass
class Replica:
    base_url: str
    outstanding: int = 0
    healthy: bool = True
    ejected_until: float = 0.0

    @property
    def available(self) -> bool:
        return self.healthy and time.monotonic() >= self.ejected_until


@dataclass
class _Route:
    model: UpstreamModel
    replicas: list[Replica] = field(default_factory=list)
    turn: int = 0

    def pick(self, exclude: Sequence[Replica] = ()) -> Replica | None:
        candidates = [r for r in self.replicas if r.available and r not in exclude]
        if not candidates:
            candidates = [r for r in self.replicas if r not in exclude]  # all look down: try anyway
        if not candidates:
            return None
        self.turn += 1
        low = min(r.outstanding for r in candidates)
        tied = [r for r in candidates if r.outstanding == low]
        return tied[self.turn % len(tied)]


@dataclass
class _Lease:
    """A replica's slot and open response, held by one event stream."""

    replica: Replica
    response: httpx.Response
    held: bool = True

    def release(self) -> None:
        if self.held:
            self.held = False
            self.replica.outstanding -= 1

    def abandon(self, loop: asyncio.AbstractEventLoop) -> None:
        """The stream was dropped unread: release, and close the response on its loop."""
        if self.held:
            self.release()
            if not loop.is_closed():
                loop.call_soon_threadsafe(lambda: loop.create_task(self.response.aclose()))


class _Retry(Exception):
    """The replica failed before sending anything: another may take the request."""


class UpstreamEngine(Engine):
    def __init__(
        self,
        models: Sequence[UpstreamModel],
        health_interval_s: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,  # tests: httpx.MockTransport with recorded streams
    ) -> None:
        self._routes = {m.id: _Route(m, [Replica(u.rstrip("/")) for u in m.base_urls]) for m in models}
        self._health_interval_s = health_interval_s
        self._created = int(time.time())
        self._client = httpx.AsyncClient(
            timeout=None, limits=httpx.Limits(max_connections=512), trust_env=False, transport=transport
        )
        self._health_task: asyncio.Task[None] | None = None

    def models(self) -> list[ModelInfo]:
        return [
            ModelInfo(
                id=m.id,
                created=self._created,
                context_length=m.context_length,
                fingerprint="fp_upstream",
                input_modalities=("text", "image") if m.vision else ("text",),
                reasoning=m.reasoning,
                reasoning_efforts=m.reasoning_efforts,
            )
            for m in (r.model for r in self._routes.values())
        ]

    def replicas(self, model: str) -> Replicas | None:
        route = self._routes.get(model)
        if route is None:
            return None
        return Replicas(healthy=sum(1 for r in route.replicas if r.available), total=len(route.replicas))

    def stats(self) -> dict[str, dict[str, float]]:
        return {
            mid: {"running": float(sum(r.outstanding for r in route.replicas))} for mid, route in self._routes.items()
        }

    async def tokenize(self, model: str, text: str) -> list[Token]:
        raise InvalidArgument(f"Tokenization is not available for model {model}: it is served by an upstream engine.")

    async def open(self) -> None:
        """Check every replica once now (an unreachable one is logged at once), then every few seconds."""
        if self._health_task is not None:
            return
        await self._check_all()
        for problem in self.problems():
            log.warning("%s", problem)
        self._health_task = asyncio.create_task(self._check_health(), name="upstream-health")

    def problems(self) -> list[str]:
        return [
            f"model {mid}: none of its {len(route.replicas)} upstream replicas is reachable "
            f"({', '.join(r.base_url for r in route.replicas)})"
            for mid, route in self._routes.items()
            if not any(r.available for r in route.replicas)
        ]

    async def check(self, request: GenerationRequest) -> None:
        if request.chat.prompt is not None:
            raise InvalidArgument(
                f"Legacy completions are not available for model {request.model}: it is served by an upstream "
                "engine. Use chat completions or the Responses API."
            )

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[Event, None]:
        await self.check(request)
        route = self._routes[request.model]
        body = upstream_wire.openai_body(upstream_wire.with_data_urls(request), route.model.upstream_model)
        if request.background and route.model.background_priority is not None:
            body["priority"] = route.model.background_priority  # the engine runs interactive work first
        tried: list[Replica] = []
        while (replica := route.pick(tried)) is not None:
            tried.append(replica)
            replica.outstanding += 1
            try:
                response = await self._open(route.model, replica, body)
            except _Retry:
                replica.outstanding -= 1
                continue
            except BaseException:
                replica.outstanding -= 1
                raise
            lease = _Lease(replica, response)
            events = self._events(route.model, lease)
            # A stream dropped before its first step never runs its `finally`: free the lease then too.
            weakref.finalize(events, lease.abandon, asyncio.get_running_loop())
            return events
        raise Unavailable(f"No upstream replica of model {request.model} is reachable.")

    async def _open(self, model: UpstreamModel, replica: Replica, body: dict[str, Any]) -> httpx.Response:
        headers = {"Authorization": f"Bearer {model.api_key}"} if model.api_key else {}
        timeout = httpx.Timeout(model.timeout_s, connect=model.connect_timeout_s)
        request = self._client.build_request(
            "POST", f"{replica.base_url}/chat/completions", json=body, headers=headers, timeout=timeout
        )
        try:
            response = await self._client.send(request, stream=True)
        except (httpx.ReadTimeout, httpx.WriteTimeout, httpx.PoolTimeout):
            # It took the request and did not answer within the model's timeout: it is busy, not gone;
            # sending the same work to another replica would only double it.
            raise Unavailable(f"The upstream engine of model {model.id} did not answer in time.") from None
        except httpx.TransportError as exc:  # connection refused, reset, protocol errors: try another
            replica.ejected_until = time.monotonic() + EJECT_S
            log.warning(
                "upstream %s failed before answering (%s); ejected for %.0f s",
                replica.base_url,
                type(exc).__name__,
                EJECT_S,
            )
            raise _Retry from None
        if response.status_code >= 500:
            await response.aclose()
            replica.ejected_until = time.monotonic() + EJECT_S
            log.warning("upstream %s answered %d; trying another replica", replica.base_url, response.status_code)
            raise _Retry
        if response.status_code in (401, 403):
            # This replica refuses localxai itself (its key is wrong), not the request: its fault, so
            # another replica may well answer. Loud, because an operator must fix it.
            await response.aclose()
            replica.ejected_until = time.monotonic() + EJECT_S
            log.error(
                "upstream %s refused localxai's credentials (HTTP %d): check the model's api_key_env; "
                "ejected for %.0f s",
                replica.base_url,
                response.status_code,
                EJECT_S,
            )
            raise _Retry
        if response.status_code != 200:
            try:
                detail = (await response.aread())[:500]
            except httpx.HTTPError:
                detail = b"(unreadable)"
            await response.aclose()
            log.info("upstream %s refused a request: %d %r", replica.base_url, response.status_code, detail)
            raise upstream_wire.upstream_error(response)
        return response

    async def _events(self, model: UpstreamModel, lease: _Lease) -> AsyncGenerator[Event, None]:
        replica, response = lease.replica, lease.response
        calls: dict[int, dict[int, dict[str, str]]] = {}
        usage: Usage | None = None
        pieces = 0
        try:
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                payload = line[5:].strip()
                if payload == "[DONE]":
                    break
                chunk = json.loads(payload)
                if "error" in chunk and "choices" not in chunk:
                    raise Unavailable(f"The upstream engine of model {model.id} failed mid-stream.")
                for choice in chunk.get("choices") or []:
                    for event in upstream_wire.choice_events(choice, calls):
                        pieces += isinstance(event, (TextDelta, ReasoningDelta))
                        yield event
                if chunk.get("usage"):
                    usage = upstream_wire.usage(chunk["usage"])
            yield UsageReport(usage or Usage(completion_tokens=pieces))
        except (httpx.HTTPError, ValueError, TypeError, AttributeError, KeyError) as exc:  # broken or odd data
            replica.ejected_until = time.monotonic() + EJECT_S
            log.warning("upstream %s stream broke: %s", replica.base_url, type(exc).__name__)
            raise Unavailable(f"The upstream engine of model {model.id} failed mid-stream.") from None
        finally:
            lease.release()
            # Our client left or we are done: the upstream request ends too. Shielded, because the
            # server's cancel scope would otherwise cancel the close itself.
            with anyio.CancelScope(shield=True):
                await response.aclose()

    async def _check_health(self) -> None:
        while True:
            await asyncio.sleep(self._health_interval_s)
            await self._check_all()

    async def _check_all(self) -> None:
        replicas = [replica for route in self._routes.values() for replica in route.replicas]
        await asyncio.gather(*(self._check(replica) for replica in replicas))

    async def _check(self, replica: Replica) -> None:
        root = replica.base_url.removesuffix("/v1")
        try:
            r = await self._client.get(f"{root}/health", timeout=2.0)
            healthy = r.status_code == 200
        except httpx.HTTPError:
            healthy = False
        if healthy != replica.healthy:
            log.log(logging.INFO if healthy else logging.WARNING, "upstream %s is %s", replica.base_url,
                    "reachable again" if healthy else "unreachable")  # fmt: skip
        replica.healthy = healthy

    async def close(self) -> None:
        if self._health_task is not None:
            self._health_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health_task
        await self._client.aclose()
