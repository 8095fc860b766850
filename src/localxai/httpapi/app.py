"""The FastAPI application: routes that parse, call the ChatService and render xAI's shapes."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from localxai import logs
from localxai.auth import ApiKey
from localxai.errors import Gone, InvalidArgument, LocalXAIError, PayloadTooLarge, Unavailable
from localxai.httpapi import (
    batches,
    collections,
    completions,
    convert,
    embeddings,
    files,
    models_admin,
    playground,
    responses,
    responses_input,
)
from localxai.httpapi import errors as http_errors
from localxai.httpapi.connections import BODY_TIMED_OUT
from localxai.httpapi.errors import require_json
from localxai.httpapi.schema import ChatCompletionRequest, TokenizeRequest
from localxai.httpapi.sse import chat_chunks
from localxai.runtime import Runtime
from localxai.service import Shutdown
from localxai.tasks import all_or_nothing

log = logging.getLogger(__name__)

PUBLIC_PATHS = frozenset({"/health"}) | playground.PUBLIC_PATHS  # never an API route
QUIET_PATHS = frozenset({"/health", "/ready", "/metrics"})  # probes and scrapes: no line per request
DISCONNECT_POLL_S = 0.25


class GatewayMiddleware:
    """In front of every route: request id (header and logs), the body size cap, authentication
    (every route but /health and the playground's page, before the body is read), and request metrics."""

    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self.app = app
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request_id = uuid.uuid4().hex
        record = logs.begin(request_id)
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = {"code": 500}

        async def send_with_id(message: Any) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
                status["code"] = message["status"]
            await send(message)

        try:
            await self._handle(scope, receive, send_with_id, request_id)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")  # the route's template, never the raw path
            model = self.runtime.service.model_label(state.get("model"))
            # A body that did not arrive in time was answered 408 by the connection, not by the app.
            code = "408" if state.get(BODY_TIMED_OUT) else "499" if state.get("client_left") else str(status["code"])
            self.runtime.metrics.requests.labels(path, code, model).inc()
            if path not in QUIET_PATHS:
                record.model = record.model or model or None
                logs.log.info(record.line(scope["method"], path, code))

    async def _handle(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        async def refuse(exc: LocalXAIError) -> None:
            await http_errors.error_response(exc, request_id)(scope, receive, send)

        if scope["path"] not in PUBLIC_PATHS:
            headers = dict(scope["headers"])
            auth = headers.get(b"authorization")
            try:
                scope["state"]["api_key"] = await self.runtime.auth.authenticate(
                    auth.decode("latin-1") if auth else None
                )
            except LocalXAIError as exc:
                return await refuse(exc)
        if files.streams_body(scope["method"], scope["path"]):
            return await self.app(scope, receive, send)  # an upload: the route reads it as it arrives, capped
        limit = self.runtime.max_body_bytes
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return await refuse(_too_large(int(declared), limit))
        # Read the body here, up to the limit (a body without Content-Length is counted as it
        # arrives), then hand it to the app; later receive() calls go to the client (disconnects).
        body, more = bytearray(), scope["method"] in ("POST", "PUT", "PATCH")
        while more:
            message = await receive()
            if message["type"] != "http.request":
                scope["state"]["client_left"] = True  # before sending its body: counted as 499 (nginx's number)
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > limit:
                return await refuse(_too_large(len(body), limit))
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _too_large(size: int, limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"Request body too large: {size} bytes exceeds this server's limit of {limit} bytes.")


async def until_disconnect(request: Request, work: Awaitable[Any], shutdown: Shutdown) -> Any:
    """Run `work`, cancelling it if the client disconnects (Starlette does not for plain responses),
    or answering xAI's 503 when the shutdown grace ends first (uvicorn would send a bare 500)."""
    task = asyncio.ensure_future(work)
    try:
        while not (await asyncio.wait({task}, timeout=DISCONNECT_POLL_S))[0]:
            if await request.is_disconnected():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                log.info("client disconnected; generation cancelled")  # the log line carries the request id
                return JSONResponse({}, status_code=499)
            if shutdown.expired():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                log.info("shutdown grace over; request cancelled")
                stopping = Unavailable("The server is shutting down; retry the request.")
                return http_errors.error_response(stopping, request.state.request_id)
        return task.result()
    finally:
        task.cancel()


def create_app(runtime: Runtime, companions: Sequence[Callable[[], AbstractAsyncContextManager[Any]]] = ()) -> FastAPI:
    """The REST app; `companions` (the gRPC server) start and stop with it."""
    service, deferred = runtime.service, runtime.deferred

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        await runtime.start()
        try:
            async with AsyncExitStack() as stack:
                for companion in companions:
                    await stack.enter_async_context(companion())
                yield
        finally:
            await runtime.close()

    app = FastAPI(title="localxai", version="0.1.0", lifespan=lifespan)
    app.add_middleware(GatewayMiddleware, runtime=runtime)
    app.add_exception_handler(RequestValidationError, http_errors.on_validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(LocalXAIError, http_errors.on_local_error)
    app.add_exception_handler(StarletteHTTPException, http_errors.on_http_error)
    app.add_exception_handler(Exception, http_errors.on_unexpected)

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Any:
        require_json(request)
        chat = convert.chat_request(body)
        request.state.model = chat.model
        caller: ApiKey = request.state.api_key
        if body.deferred:
            if chat.stream:
                raise InvalidArgument("deferred and stream cannot be combined.")
            return {"request_id": await deferred.submit(chat, caller)}
        if not chat.stream:
            return await until_disconnect(request, _complete_body(service, chat, caller), runtime.shutdown)
        stream = await service.generate(chat, caller)
        return _sse(chat_chunks(stream, chat.include_usage, request.state.request_id))

    @app.post("/v1/completions")
    async def legacy_completions(body: completions.CompletionRequest, request: Request) -> Any:
        require_json(request)
        chats = completions.chat_requests(body)
        request.state.model = chats[0].model
        caller: ApiKey = request.state.api_key
        if not body.stream:

            async def answer() -> dict[str, Any]:
                done = await all_or_nothing([service.complete(chat, caller) for chat in chats])
                return completions.completion_body(
                    [(c, chat.prompt if body.echo else None) for c, chat in zip(done, chats, strict=True)]
                )

            return await until_disconnect(request, answer(), runtime.shutdown)
        [chat] = chats
        stream = await service.generate(chat, caller)
        echo = chat.prompt if body.echo else None
        return _sse(completions.completion_chunks(stream, chat, echo, request.state.request_id))

    @app.post("/v1/responses")
    async def create_response(body: responses_input.ResponsesRequest, request: Request) -> Any:
        require_json(request)
        caller: ApiKey = request.state.api_key
        request.state.model = body.model
        turn = responses_input.turn(body, runtime.sealer)
        if body.background:
            queued = await runtime.background.submit(turn, caller)
            if not body.stream:
                return responses.response_body(queued, runtime.sealer)
            following = await runtime.background.follow(queued.id, caller)
            return _sse(responses.response_events(following, request.state.request_id, runtime.sealer))
        if not body.stream:

            async def answer() -> dict[str, Any]:
                return responses.response_body(await runtime.conversations.complete(turn, caller), runtime.sealer)

            return await until_disconnect(request, answer(), runtime.shutdown)
        running = await runtime.conversations.stream(turn, caller)
        return _sse(responses.response_events(running, request.state.request_id, runtime.sealer))

    @app.get("/v1/responses/{response_id}")
    async def get_response(
        response_id: str, request: Request, stream: str = "false", starting_after: str | None = None
    ) -> Any:
        streamed, after = responses_input.retrieve_query(stream, starting_after)  # a bad value is xAI's 400
        if streamed:  # a background response's events, replayed from after `starting_after` and followed
            following = await runtime.background.follow(response_id, request.state.api_key)
            return _sse(responses.response_events(following, request.state.request_id, runtime.sealer, after=after))
        return responses.response_body(await runtime.background.get(response_id, request.state.api_key), runtime.sealer)

    @app.post("/v1/responses/{response_id}/cancel")
    async def cancel_response(response_id: str, request: Request) -> dict[str, Any]:
        cancelled = await runtime.background.cancel(response_id, request.state.api_key)
        return responses.response_body(cancelled, runtime.sealer)

    @app.get("/v1/responses/{response_id}/input_items")
    async def response_input_items(
        response_id: str, request: Request, limit: str = "20", order: str = "desc", after: str | None = None
    ) -> dict[str, Any]:
        count, descending = responses_input.input_items_query(limit, order)  # strings: a bad value is xAI's 400
        stored = await runtime.conversations.get(response_id, request.state.api_key)
        return responses.input_items_body(stored, count, descending, after)

    @app.delete("/v1/responses/{response_id}")
    async def delete_response(response_id: str, request: Request) -> dict[str, Any]:
        await runtime.conversations.delete(response_id, request.state.api_key)
        return {"id": response_id, "object": "response", "deleted": True}

    @app.post("/v1/responses/compact")
    async def compact_response(body: responses_input.CompactRequest, request: Request) -> Any:
        require_json(request)
        caller: ApiKey = request.state.api_key
        request.state.model = body.model
        context = await runtime.conversations.context(responses_input.compact_turn(body, runtime.sealer), caller)

        async def answer() -> dict[str, Any]:
            summary = await runtime.conversations.compact(context, caller)
            return responses.compaction_body(context, summary, runtime.sealer)

        return await until_disconnect(request, answer(), runtime.shutdown)

    @app.post("/v1/messages")
    async def anthropic_messages() -> Any:
        raise Gone(
            "The Anthropic-compatible /v1/messages endpoint was removed from the xAI API on February 20, 2026. "
            "Please migrate to the Responses API (/v1/responses) or gRPC."
        )

    @app.get("/v1/chat/deferred-completion/{request_id}")
    async def deferred_completion(request_id: str, request: Request) -> Any:
        completion = await deferred.fetch(request_id, request.state.api_key)
        if completion is None:
            return Response(status_code=202)  # pending: empty body, as xAI
        return convert.completion_body(completion)

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [convert.model_body(m) for m in service.list_models()]}

    @app.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str) -> dict[str, Any]:
        return convert.model_body(service.get_model(model_id))

    @app.get("/v1/language-models")
    async def list_language_models() -> dict[str, Any]:
        return {"models": [convert.language_model_body(m) for m in service.list_models()]}

    @app.get("/v1/language-models/{model_id:path}")
    async def get_language_model(model_id: str) -> dict[str, Any]:
        return convert.language_model_body(service.get_model(model_id))

    @app.post("/v1/tokenize-text")
    async def tokenize_text(body: TokenizeRequest, request: Request) -> dict[str, Any]:
        require_json(request)
        request.state.model = body.model
        _, tokens = await service.tokenize(body.model, body.text, request.state.api_key)
        return {"token_ids": [{"token_id": t.id, "string_token": t.text, "token_bytes": list(t.bytes)} for t in tokens]}

    @app.get("/v1/api-key")
    async def api_key(request: Request) -> dict[str, Any]:
        key: ApiKey = request.state.api_key
        return {
            "redacted_api_key": key.redacted,
            "user_id": "local",
            "name": key.name,
            "create_time": convert.rfc3339(key.created),
            "modify_time": convert.rfc3339(key.modified),
            "modified_by": "local",
            "team_id": "local",
            "acls": key.acls,
            "api_key_id": key.key_id,
            "team_blocked": False,
            "api_key_blocked": False,
            "api_key_disabled": False,
        }

    @app.get("/v1/me")
    async def me(request: Request) -> dict[str, Any]:
        """Who is calling (xAI's shape): a local user and team, and the caller's key."""
        key: ApiKey = request.state.api_key
        return {
            "user_id": "local",
            "team_id": "local",
            "zdr_status": "disabled",  # nothing is stored beyond what the API's own storage keeps
            "team_blocked": False,
            "api_key": {
                "api_key_id": key.key_id,
                "redacted_api_key": key.redacted,
                "blocked": False,
                "disabled": False,
            },
        }

    @app.get("/health")
    async def health() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/ready")
    async def ready() -> Any:
        """Readiness: models loaded (they are, once the app runs) and the store reachable."""
        if runtime.shutdown.started:
            return http_errors.error_response(Unavailable("The server is shutting down."))
        if not await asyncio.to_thread(runtime.store.ping):
            return http_errors.error_response(Unavailable("The database is not reachable."))
        problems = service.problems()
        if problems:
            return http_errors.error_response(Unavailable("Not ready: " + "; ".join(problems) + "."))
        return {"status": "ready", "models": [m.id for m in service.list_models()]}

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(runtime.metrics.render(), media_type="text/plain; version=0.0.4")

    files.add_routes(app, runtime.files)
    embeddings.add_routes(app, runtime.embeddings)
    collections.add_routes(app, runtime)
    batches.add_routes(app, runtime.batches)
    models_admin.add_routes(app, service, runtime.cached_models)
    playground.add_routes(app, runtime)

    return app


async def _complete_body(service: Any, chat: Any, caller: ApiKey) -> dict[str, Any]:
    return convert.completion_body(await service.complete(chat, caller))


def _sse(body: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(
        body, media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
