"""Model management routes, as llama-server's router mode names them: `GET /models` (every servable
model, with whether it is loaded), `POST /models/load` and `POST /models/unload` with `{"model": ...}`;
and, for the download cache, `POST /models/pull` (progress streamed as NDJSON lines, as Ollama's
`/api/pull` streams them) and `POST /models/remove` (what `localxai rm` does, unloading first).
Managing takes a key the server was started with (`--api-key`, or open access on loopback); keys made
with `localxai keys create` may list but not manage."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from localxai.auth import ApiKey
from localxai.chat import ModelInfo
from localxai.engines.registry import CachedModels
from localxai.errors import ConfigError, InvalidArgument, PermissionDenied
from localxai.httpapi import convert
from localxai.httpapi.errors import error_body, require_json
from localxai.httpapi.schema import RequestBody
from localxai.service import ChatService

log = logging.getLogger(__name__)
UNLOAD_WAIT_S = 30.0  # an unload waits this long for the model's requests to end (nothing is cut)


class ModelName(RequestBody):
    model: str


class PullBody(RequestBody):
    model: str  # hf:ORG/REPO[:QUANT]
    stream: bool = True


def router_model_body(info: ModelInfo, operator: bool = False) -> dict[str, Any]:
    """llama-server's status values, and "unavailable" for an upstream model with no healthy replica."""
    if info.replicas is not None and not info.replicas.healthy:
        status = "unavailable"
    else:
        status = "loaded" if info.loaded is not False else "unloaded"
    path = {"path": info.path} if operator and info.path is not None else {}
    return {**convert.model_body(info), **path, "status": {"value": status}}


def _operator(request: Request) -> None:
    caller: ApiKey = request.state.api_key
    if not caller.operator:
        raise PermissionDenied(
            f"The API key {caller.redacted} may not manage models: that takes a key the server was started "
            "with (--api-key)."
        )


def add_routes(app: FastAPI, service: ChatService, cached: CachedModels | None) -> None:
    pulls: set[asyncio.Task[str]] = set()  # a pull goes on when its client goes away: the download is kept

    def download_cache() -> CachedModels:
        if cached is None:
            raise InvalidArgument("This server serves no models from the download cache: that needs --engine llamacpp.")
        return cached

    @app.get("/models")
    async def router_models(request: Request) -> dict[str, Any]:
        operator = request.state.api_key.operator
        return {"object": "list", "data": [router_model_body(m, operator) for m in service.list_models()]}

    @app.post("/models/load")
    async def load_model(body: ModelName, request: Request) -> dict[str, Any]:
        require_json(request)
        _operator(request)
        return {"success": True, **router_model_body(await service.load_model(body.model), True)}

    @app.post("/models/unload")
    async def unload_model(body: ModelName, request: Request) -> dict[str, Any]:
        require_json(request)
        _operator(request)
        return {"success": True, **router_model_body(await service.unload_model(body.model, UNLOAD_WAIT_S), True)}

    @app.post("/models/remove", response_model=None)
    async def remove_model(body: ModelName, request: Request) -> dict[str, Any]:
        require_json(request)
        _operator(request)
        try:
            removed = await download_cache().remove(body.model, UNLOAD_WAIT_S)
        except ConfigError as exc:  # a bad reference, nothing cached under it
            raise InvalidArgument(str(exc)) from None
        return {"success": True, "removed": [str(path) for path in removed]}

    @app.post("/models/pull", response_model=None)
    async def pull_model(body: PullBody, request: Request) -> StreamingResponse | dict[str, Any]:
        require_json(request)
        _operator(request)
        models = download_cache()
        from localxai.hub import HubRef

        try:
            HubRef.parse(body.model)  # a bad reference is a 400 before anything streams
        except ConfigError as exc:
            raise InvalidArgument(str(exc)) from None
        events: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        def report(event: dict[str, Any]) -> None:  # called from the pull's thread
            loop.call_soon_threadsafe(events.put_nowait, event)

        task = asyncio.ensure_future(models.pull(body.model, report))
        pulls.add(task)
        task.add_done_callback(pulls.discard)
        task.add_done_callback(lambda _: events.put_nowait(None))  # after every progress event the pull sent
        if not body.stream:
            try:
                return _pulled(service, await asyncio.shield(task))
            except ConfigError as exc:
                raise InvalidArgument(str(exc)) from None
        return StreamingResponse(_lines(service, events, task), media_type="application/x-ndjson")


async def _lines(
    service: ChatService, events: asyncio.Queue[dict[str, Any] | None], task: asyncio.Future[str]
) -> AsyncIterator[bytes]:
    while (event := await events.get()) is not None:
        yield _line(event)
    try:
        yield _line(_pulled(service, task.result()))
    except ConfigError as exc:  # the Hub refused, a download failed, a file did not match, not servable
        yield _line(error_body(InvalidArgument(str(exc))))
    except Exception:
        log.exception("pulling a model failed")
        yield _line(error_body(None))


def _pulled(service: ChatService, model: str) -> dict[str, Any]:
    return {"status": "success", "model": router_model_body(service.get_model(model), True)}


def _line(event: dict[str, Any]) -> bytes:
    return json.dumps(event).encode() + b"\n"
