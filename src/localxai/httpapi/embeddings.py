"""REST routes of embeddings (`/v1/embeddings`, OpenAI's shape) and the per-kind model lists."""

from __future__ import annotations

import base64
from typing import Any, Literal

import numpy as np
from fastapi import FastAPI, Request

from localxai.embeddings import Embedded, EmbeddingModelInfo, Embeddings
from localxai.errors import InvalidArgument, NotFound
from localxai.httpapi.convert import OWNED_BY
from localxai.httpapi.errors import require_json
from localxai.httpapi.schema import RequestBody


class EmbeddingRequest(RequestBody):
    input: str | list[str] | list[int] | list[list[int]]
    model: str
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None


def texts(body: EmbeddingRequest) -> list[str]:
    if isinstance(body.input, str):
        return [body.input]
    if body.input and not all(isinstance(item, str) for item in body.input):
        raise InvalidArgument("input must be a string or a list of strings: token arrays are model-specific here.")
    return [item for item in body.input if isinstance(item, str)]


def embeddings_body(done: Embedded, encoding: str) -> dict[str, Any]:
    def vector(row: np.ndarray) -> Any:
        if encoding == "base64":  # float32, little-endian: what OpenAI's SDKs decode
            return base64.b64encode(row.astype("<f4").tobytes()).decode()
        return row.tolist()

    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": vector(row)} for i, row in enumerate(done.vectors)],
        "model": done.model.id,
        "usage": {"prompt_tokens": done.tokens, "total_tokens": done.tokens},
    }


def model_body(info: EmbeddingModelInfo) -> dict[str, Any]:
    return {
        "id": info.id,
        "fingerprint": info.fingerprint,
        "created": info.created,
        "object": "model",
        "owned_by": OWNED_BY,
        "version": "1.0.0",
        "input_modalities": ["text"],
        "prompt_text_token_price": 0,
        "prompt_image_token_price": 0,
        "aliases": list(info.aliases),
        "dimensions": list(info.dimensions),  # an extra: the sizes `dimensions` may ask for
    }


def add_routes(app: FastAPI, embeddings: Embeddings) -> None:
    @app.post("/v1/embeddings")
    async def embed(body: EmbeddingRequest, request: Request) -> dict[str, Any]:
        require_json(request)
        request.state.model = body.model
        done = await embeddings.embed(body.model, texts(body), body.dimensions, request.state.api_key)
        return embeddings_body(done, body.encoding_format)

    @app.get("/v1/embedding-models")
    async def list_embedding_models() -> dict[str, Any]:
        return {"models": [model_body(m) for m in embeddings.list_models()]}

    @app.get("/v1/embedding-models/{model_id:path}")
    async def get_embedding_model(model_id: str) -> dict[str, Any]:
        return model_body(embeddings.get_model(model_id))

    # Nothing here generates images or videos: the lists say so (404 for any id), as xAI's shapes.
    for kind in ("image-generation", "video-generation"):

        @app.get(f"/v1/{kind}-models")
        async def list_none() -> dict[str, Any]:
            return {"models": []}

        @app.get(f"/v1/{kind}-models/{{model_id:path}}")
        async def get_none(model_id: str) -> dict[str, Any]:
            raise NotFound(f"The model {model_id!r} does not exist: this server generates no images or videos.")
