"""Model management routes, as llama-server's router mode names them: `GET /models` (every servable
model, with whether it is loaded), `POST /models/load` and `POST /models/unload` with `{"model": ...}`.
Loading and unloading take a key the server was started with (`--api-key`, or open access on loopback);
keys made with `localxai keys create` may list but not manage."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request

from localxai.auth import ApiKey
from localxai.chat import ModelInfo
from localxai.errors import PermissionDenied
from localxai.httpapi import convert
from localxai.httpapi.errors import require_json
from localxai.httpapi.schema import RequestBody
from localxai.service import ChatService

UNLOAD_WAIT_S = 30.0  # an unload waits this long for the model's requests to end (nothing is cut)


class ModelName(RequestBody):
    model: str


def router_model_body(info: ModelInfo) -> dict[str, Any]:
    """llama-server's status values, and "unavailable" for an upstream model with no healthy replica."""
    if info.replicas is not None and not info.replicas.healthy:
        status = "unavailable"
    else:
        status = "loaded" if info.loaded is not False else "unloaded"
    return {**convert.model_body(info), "status": {"value": status}}


def _operator(request: Request) -> None:
    caller: ApiKey = request.state.api_key
    if not caller.operator:
        raise PermissionDenied(
            f"The API key {caller.redacted} may not load or unload models: that takes a key the server was started "
            "with (--api-key)."
        )


def add_routes(app: FastAPI, service: ChatService) -> None:
    @app.get("/models")
    async def router_models() -> dict[str, Any]:
        return {"object": "list", "data": [router_model_body(m) for m in service.list_models()]}

    @app.post("/models/load")
    async def load_model(body: ModelName, request: Request) -> dict[str, Any]:
        require_json(request)
        _operator(request)
        return {"success": True, **router_model_body(await service.load_model(body.model))}

    @app.post("/models/unload")
    async def unload_model(body: ModelName, request: Request) -> dict[str, Any]:
        require_json(request)
        _operator(request)
        return {"success": True, **router_model_body(await service.unload_model(body.model, UNLOAD_WAIT_S))}
