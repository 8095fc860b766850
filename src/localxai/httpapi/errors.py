"""xAI's error body and the one table from exception classes to HTTP statuses."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from localxai import errors as e

log = logging.getLogger(__name__)
LARGE_BODY = 1024 * 1024  # bytes of JSON past which parsing leaves the event loop

# First match wins: subclasses before their bases.
HTTP_STATUS: tuple[tuple[type[e.LocalXAIError], int], ...] = (
    (e.MalformedBody, 422),
    (e.UnsupportedMediaType, 415),
    (e.PayloadTooLarge, 413),
    (e.InvalidArgument, 400),
    (e.Unauthenticated, 401),
    (e.PermissionDenied, 403),
    (e.Gone, 410),
    (e.NotFound, 404),
    (e.MethodNotAllowed, 405),
    (e.ResourceExhausted, 429),
    (e.Unavailable, 503),
)


def status_for(exc: e.LocalXAIError) -> int:
    return next((status for cls, status in HTTP_STATUS if isinstance(exc, cls)), 500)


def error_body(exc: e.LocalXAIError | None, request_id: str = "") -> dict[str, Any]:
    """`{"code": <gRPC status text>, "error": <message>}`; unexpected errors say only 'internal error'."""
    code = exc.status if exc is not None and exc.public else e.Status.INTERNAL
    return {"code": code.value, "error": e.public_message(exc, request_id)}


def error_response(exc: e.LocalXAIError | None, request_id: str = "") -> JSONResponse:
    status = 500 if exc is None else status_for(exc)
    headers = {}
    if isinstance(exc, (e.ResourceExhausted, e.Unavailable)) and exc.retry_after is not None:
        headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    return JSONResponse(error_body(exc, request_id), status_code=status, headers=headers)


def request_id(request: Request) -> str:
    return getattr(request.state, "request_id", "")


def require_json(request: Request) -> None:
    """xAI answers 415 when the Content-Type is not JSON (the body itself parsed fine here)."""
    problem = body_media_problem(request, None)
    if problem is not None:
        raise problem


async def json_body(request: Request, max_bytes: int | None = None) -> Any:
    """The JSON body of a route that reads its own (415 when not JSON; 413 past `max_bytes`, under the
    gateway's --max-body-mb; 400 when it does not parse). A large body is parsed off the event loop."""
    require_json(request)
    data = await request.body()
    if max_bytes is not None and len(data) > max_bytes:
        raise e.PayloadTooLarge(f"The request body may be at most {max_bytes // (1024 * 1024)} MB.")
    try:
        return json.loads(data) if len(data) < LARGE_BODY else await asyncio.to_thread(json.loads, data)
    except ValueError:
        raise e.InvalidArgument("The request body is not valid JSON.") from None


def body_media_problem(request: Request, body: bytes | None) -> e.UnsupportedMediaType | None:
    """xAI answers 415 for an empty POST body or a Content-Type other than JSON."""
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "application/json":
        return e.UnsupportedMediaType("Content-Type must be application/json.")
    if body is not None and not body.strip():
        return e.UnsupportedMediaType("The request body is empty; a JSON object is required.")
    return None


def validation_message(errors: Sequence[Any]) -> str:
    """xAI's text for a body that does not fit its type (pydantic's first error)."""
    first = errors[0]
    path = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    where = f"{path}: " if path else ""
    return f"Failed to deserialize the JSON body into the target type: {where}{first.get('msg', 'invalid')}"


async def on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    problem = body_media_problem(request, await request.body())
    if problem is not None:
        return error_response(problem)
    errors = list(exc.errors())
    if errors and errors[0].get("type") == "invalid_unicode":  # well-formed JSON, text no model can take: 400
        return error_response(e.InvalidArgument(errors[0]["msg"]))
    return error_response(e.MalformedBody(validation_message(errors)))


async def on_local_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, e.LocalXAIError)
    if status_for(exc) == 500:
        log.error("internal error (request %s): %s", request_id(request), exc.message)
    return error_response(exc, request_id(request))


async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 405:
        return error_response(e.MethodNotAllowed(f"Method {request.method} is not allowed for {request.url.path}."))
    if exc.status_code == 404:
        return error_response(e.NotFound(f"No route for {request.method} {request.url.path}."))
    log.warning("unexpected HTTP error %s on %s", exc.status_code, request.url.path)
    return error_response(e.InvalidArgument(str(exc.detail)) if exc.status_code < 500 else None)


async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error (request %s)", request_id(request))
    return error_response(None, request_id(request))
