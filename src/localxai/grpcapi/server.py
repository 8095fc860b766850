"""The gRPC server: xai-sdk's services on top of the same core as the REST adapter."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
from google.protobuf import empty_pb2
from xai_sdk.proto.v5 import (
    auth_pb2,
    auth_pb2_grpc,
    chat_pb2,
    chat_pb2_grpc,
    deferred_pb2,
    models_pb2,
    models_pb2_grpc,
    tokenize_pb2,
    tokenize_pb2_grpc,
)

from localxai import errors as e
from localxai.auth import ApiKey
from localxai.chat import Finished, ReasoningDelta, TextDelta, ToolCallDelta, UsageReport
from localxai.grpcapi import convert
from localxai.listen import grpc_addresses
from localxai.runtime import Runtime

log = logging.getLogger(__name__)

# The SDK treats a wrong key as UNAUTHENTICATED (REST answers 400 with the same message).
STATUS_OVERRIDES = {e.IncorrectApiKey: grpc.StatusCode.UNAUTHENTICATED}
MAX_MESSAGE_BYTES = 20 * 1024 * 1024 + 64 * 1024  # the SDK's 20 MiB limits, plus framing
# xai-sdk pings every 30 s, also while a call waits for a long reasoning phase. grpc's default server
# policy allows one ping per 5 minutes and answers the third early one with GOAWAY `too_many_pings`,
# which cut calls after ~2 minutes and made the SDK retry them from scratch. Accept pings every 10 s.
MIN_PING_INTERVAL_MS = 10_000
SERVER_KEEPALIVE_MS = 60_000  # and ping idle clients ourselves, so dead connections are noticed


def status_for(exc: e.LocalXAIError) -> grpc.StatusCode:
    for cls, code in STATUS_OVERRIDES.items():
        if isinstance(exc, cls):
            return code
    return getattr(grpc.StatusCode, exc.status.name)


async def abort(context: grpc.aio.ServicerContext, exc: BaseException) -> None:
    """End the call with the error's status and message; unexpected errors say only 'internal error'."""
    if isinstance(exc, e.LocalXAIError) and exc.public:
        await context.abort(status_for(exc), exc.message)
    log.error("gRPC call failed", exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, "internal error")


class _Base:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def authenticate(self, context: grpc.aio.ServicerContext) -> ApiKey:
        metadata = dict(context.invocation_metadata() or ())
        header = metadata.get("authorization")
        return await self.runtime.auth.authenticate(header if isinstance(header, str) else None)


class ChatServicer(_Base, chat_pb2_grpc.ChatServicer):
    async def GetCompletion(self, request: chat_pb2.GetCompletionsRequest, context: Any) -> Any:
        try:
            caller = await self.authenticate(context)
            completion = await self.runtime.service.complete(convert.chat_request(request), caller, api="grpc")
            return convert.completion(completion)
        except e.LocalXAIError as exc:
            await abort(context, exc)

    async def GetCompletionChunk(
        self, request: chat_pb2.GetCompletionsRequest, context: Any
    ) -> AsyncIterator[chat_pb2.GetChatCompletionChunk]:
        try:
            caller = await self.authenticate(context)
            stream = await self.runtime.service.start(convert.chat_request(request, stream=True), caller, api="grpc")
        except e.LocalXAIError as exc:
            await abort(context, exc)
            return
        head = {
            "id": stream.id,
            "created": convert.timestamp(stream.created),
            "model": stream.model,
            "system_fingerprint": stream.fingerprint,
        }
        # Every chunk carries role ASSISTANT: the SDK drops the text of chunks without it.
        assistant = chat_pb2.ROLE_ASSISTANT
        try:
            async for event in stream.events:
                if isinstance(event, TextDelta):
                    output = chat_pb2.CompletionOutputChunk(
                        delta=chat_pb2.Delta(content=event.text, role=assistant), index=event.index
                    )
                    if event.logprobs:
                        output.logprobs.CopyFrom(convert.logprobs(event.logprobs))
                    yield chat_pb2.GetChatCompletionChunk(**head, outputs=[output])
                elif isinstance(event, ReasoningDelta):
                    delta = chat_pb2.Delta(reasoning_content=event.text, role=assistant)
                    yield chat_pb2.GetChatCompletionChunk(
                        **head, outputs=[chat_pb2.CompletionOutputChunk(delta=delta, index=event.index)]
                    )
                elif isinstance(event, ToolCallDelta):
                    delta = chat_pb2.Delta(tool_calls=convert.tool_calls(event.calls), role=assistant)
                    yield chat_pb2.GetChatCompletionChunk(
                        **head, outputs=[chat_pb2.CompletionOutputChunk(delta=delta, index=event.index)]
                    )
                elif isinstance(event, Finished):
                    output = chat_pb2.CompletionOutputChunk(
                        delta=chat_pb2.Delta(role=assistant),
                        index=event.index,
                        finish_reason=convert.FINISH_REASONS[event.reason],
                    )
                    yield chat_pb2.GetChatCompletionChunk(**head, outputs=[output])
                elif isinstance(event, UsageReport):
                    yield chat_pb2.GetChatCompletionChunk(**head, usage=convert.usage(event.usage))
        except e.LocalXAIError as exc:
            await abort(context, exc)
        finally:
            await stream.events.aclose()  # client cancelled or done: stop the generation

    async def StartDeferredCompletion(self, request: chat_pb2.GetCompletionsRequest, context: Any) -> Any:
        try:
            caller = await self.authenticate(context)
            request_id = await self.runtime.deferred.submit(convert.chat_request(request), caller)
            return deferred_pb2.StartDeferredResponse(request_id=request_id)
        except e.LocalXAIError as exc:
            await abort(context, exc)

    async def GetDeferredCompletion(self, request: deferred_pb2.GetDeferredRequest, context: Any) -> Any:
        try:
            caller = await self.authenticate(context)
            completion = await self.runtime.deferred.fetch(request.request_id, caller)
        except e.LocalXAIError as exc:
            await abort(context, exc)
            return None
        if completion is None:
            return chat_pb2.GetDeferredCompletionResponse(status=deferred_pb2.PENDING)
        return chat_pb2.GetDeferredCompletionResponse(status=deferred_pb2.DONE, response=convert.completion(completion))


class ModelsServicer(_Base, models_pb2_grpc.ModelsServicer):
    async def ListLanguageModels(self, request: empty_pb2.Empty, context: Any) -> Any:
        try:
            await self.authenticate(context)
        except e.LocalXAIError as exc:
            await abort(context, exc)
        models = [convert.language_model(m) for m in self.runtime.service.list_models()]
        return models_pb2.ListLanguageModelsResponse(models=models)

    async def GetLanguageModel(self, request: models_pb2.GetModelRequest, context: Any) -> Any:
        try:
            await self.authenticate(context)
            return convert.language_model(self.runtime.service.get_model(request.name))
        except e.LocalXAIError as exc:
            await abort(context, exc)


class TokenizeServicer(_Base, tokenize_pb2_grpc.TokenizeServicer):
    async def TokenizeText(self, request: tokenize_pb2.TokenizeTextRequest, context: Any) -> Any:
        try:
            caller = await self.authenticate(context)
            info, tokens = await self.runtime.service.tokenize(request.model, request.text, caller)
        except e.LocalXAIError as exc:
            await abort(context, exc)
            return None
        return tokenize_pb2.TokenizeTextResponse(
            tokens=[tokenize_pb2.Token(token_id=t.id, string_token=t.text, token_bytes=t.bytes) for t in tokens],
            model=info.id,
        )


class AuthServicer(_Base, auth_pb2_grpc.AuthServicer):
    async def get_api_key_info(self, request: empty_pb2.Empty, context: Any) -> Any:
        try:
            key = await self.authenticate(context)
        except e.LocalXAIError as exc:
            await abort(context, exc)
            return None
        return auth_pb2.ApiKey(
            redacted_api_key=key.redacted,
            user_id="local",
            name=key.name,
            create_time=convert.timestamp(key.created),
            modify_time=convert.timestamp(key.modified),
            modified_by="local",
            team_id="local",
            acls=key.acls,
            api_key_id=key.key_id,
        )


@asynccontextmanager
async def grpc_server(
    runtime: Runtime, host: str, port: int, min_ping_interval_ms: int = MIN_PING_INTERVAL_MS
) -> AsyncIterator[grpc.aio.Server]:
    """Serve gRPC on the running event loop for the lifetime of the context."""
    options = [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.so_reuseport", 0),  # a second server on this port must fail, not take half the clients
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", min_ping_interval_ms),
        ("grpc.keepalive_time_ms", SERVER_KEEPALIVE_MS),
        ("grpc.keepalive_timeout_ms", 20_000),
    ]
    server = grpc.aio.server(options=options)
    chat_pb2_grpc.add_ChatServicer_to_server(ChatServicer(runtime), server)
    models_pb2_grpc.add_ModelsServicer_to_server(ModelsServicer(runtime), server)
    tokenize_pb2_grpc.add_TokenizeServicer_to_server(TokenizeServicer(runtime), server)
    auth_pb2_grpc.add_AuthServicer_to_server(AuthServicer(runtime), server)
    bound = 0
    for address in (f"[{a}]" if ":" in a else a for a in grpc_addresses(host)):
        try:
            bound += server.add_insecure_port(f"{address}:{port}") > 0
        except RuntimeError:
            log.debug("cannot listen on %s:%d", address, port)
    if not bound:
        raise e.ConfigError(f"cannot listen for gRPC on port {port}")
    await server.start()
    log.info("gRPC (xai-sdk) listening on %s:%d", host, port)
    try:
        yield server
    finally:
        await server.stop(grace=5)
