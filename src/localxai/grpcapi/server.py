"""The gRPC server: xai-sdk's services on top of the same core as the REST adapter.

Call handling (ids, keys, metrics, statuses) is in calls.py; messages are built in convert.py.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import grpc
from google.protobuf import empty_pb2
from xai_sdk.proto import (
    auth_pb2,
    auth_pb2_grpc,
    chat_pb2,
    chat_pb2_grpc,
    deferred_pb2,
    embed_pb2,
    embed_pb2_grpc,
    files_pb2,
    files_pb2_grpc,
    models_pb2,
    models_pb2_grpc,
    tokenize_pb2,
    tokenize_pb2_grpc,
)

from localxai import errors as e
from localxai import sealing
from localxai.auth import ApiKey
from localxai.chat import ChatRequest, Finished, StoredResponse
from localxai.conversations import Turn
from localxai.grpcapi import batches, collections, convert
from localxai.grpcapi.calls import client_streaming, lenient_bodies, streaming, unary
from localxai.listen import grpc_addresses
from localxai.runtime import Runtime
from localxai.sealing import Sealer

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 20 * 1024 * 1024 + 64 * 1024  # the SDK's 20 MiB limits, plus framing
# xai-sdk pings every 30 s, also while a call waits for a long reasoning phase. grpc's default server
# policy allows one ping per 5 minutes and answers the third early one with GOAWAY `too_many_pings`,
# which cut calls after ~2 minutes and made the SDK retry them from scratch. Accept pings every 10 s.
MIN_PING_INTERVAL_MS = 10_000
SERVER_KEEPALIVE_MS = 60_000  # and ping idle clients ourselves, so dead connections are noticed


class _Base:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime


class ChatServicer(_Base, chat_pb2_grpc.ChatServicer):
    @unary
    async def GetCompletion(self, request: chat_pb2.GetCompletionsRequest, context: Any, caller: ApiKey) -> Any:
        response = await self.runtime.conversations.complete(self._turn(request, stream=False), caller, api="grpc")
        return convert.completion(response.completion, self._sealer(response), response.tool_outputs)

    @streaming
    async def GetCompletionChunk(
        self, request: chat_pb2.GetCompletionsRequest, context: Any, caller: ApiKey
    ) -> AsyncIterator[chat_pb2.GetChatCompletionChunk]:
        running = await self.runtime.conversations.stream(self._turn(request, stream=True), caller, api="grpc")
        sealer = self._sealer(running.response)
        chunks = convert.Chunks(running.stream, running.response.tool_outputs)
        try:
            async for event in running.stream.events:
                if sealer is not None and isinstance(event, Finished):  # the thinking is whole: sealed, before the end
                    choice = running.collector.choice(event.index)
                    sealed = convert.sealed_chunk(running.stream, choice, sealer, chunks.output(event.index))
                    if sealed is not None:
                        yield sealed
                for chunk in chunks(event):
                    yield chunk
        finally:
            await running.stream.events.aclose()  # client cancelled or done: stop the generation

    def _turn(self, request: chat_pb2.GetCompletionsRequest, stream: bool) -> Turn:
        return Turn(
            convert.chat_request(request, stream=stream, sealer=self.runtime.sealer),
            previous_id=request.previous_response_id if request.HasField("previous_response_id") else None,
            store=request.store_messages,
            sealed_reasoning=request.use_encrypted_content,
            tool_outputs=tuple(sorted(convert.included(request.include))),
        )

    def _sealer(self, response: StoredResponse) -> Sealer | None:
        """The sealer when the client asked for its thinking sealed (`use_encrypted_content`)."""
        return self.runtime.sealer if response.sealed_reasoning else None

    @unary
    async def CompactContext(self, request: chat_pb2.CompactContextRequest, context: Any, caller: ApiKey) -> Any:
        """The same compaction as REST's /v1/responses/compact: a summary, sealed, to stand for the input."""
        if not request.input:
            raise e.InvalidArgument("input: give the messages to compact.")
        sealer = self.runtime.sealer
        chat = ChatRequest(model=request.model, messages=convert.messages(request.input, sealer))
        summary = await self.runtime.conversations.compact(chat, caller)
        return chat_pb2.CompactContextResponse(
            id=summary.id,
            encrypted_content=sealer.seal(summary.choices[0].text, sealing.COMPACTION),
            dropped_message_count=len(request.input),
            usage=convert.usage(summary.usage),
        )

    @unary
    async def GetStoredCompletion(
        self, request: chat_pb2.GetStoredCompletionRequest, context: Any, caller: ApiKey
    ) -> Any:
        stored = await self.runtime.conversations.get(request.response_id, caller)
        return convert.completion(replace(stored.completion, id=stored.id), include=stored.tool_outputs)

    @unary
    async def DeleteStoredCompletion(
        self, request: chat_pb2.DeleteStoredCompletionRequest, context: Any, caller: ApiKey
    ) -> Any:
        await self.runtime.conversations.delete(request.response_id, caller)
        return chat_pb2.DeleteStoredCompletionResponse(response_id=request.response_id)

    @unary
    async def StartDeferredCompletion(
        self, request: chat_pb2.GetCompletionsRequest, context: Any, caller: ApiKey
    ) -> Any:
        if request.store_messages or request.HasField("previous_response_id"):
            raise e.UnsupportedParameter("Argument not supported: store_messages and previous_response_id (deferred)")
        request_id = await self.runtime.deferred.submit(convert.chat_request(request), caller)
        return deferred_pb2.StartDeferredResponse(request_id=request_id)

    @unary
    async def GetDeferredCompletion(
        self, request: deferred_pb2.GetDeferredRequest, context: Any, caller: ApiKey
    ) -> Any:
        completion = await self.runtime.deferred.fetch(request.request_id, caller)
        if completion is None:
            return chat_pb2.GetDeferredCompletionResponse(status=deferred_pb2.PENDING)
        return chat_pb2.GetDeferredCompletionResponse(status=deferred_pb2.DONE, response=convert.completion(completion))


class ModelsServicer(_Base, models_pb2_grpc.ModelsServicer):
    @unary
    async def ListLanguageModels(self, request: empty_pb2.Empty, context: Any, caller: ApiKey) -> Any:
        models = [convert.language_model(m) for m in self.runtime.service.list_models()]
        return models_pb2.ListLanguageModelsResponse(models=models)

    @unary
    async def GetLanguageModel(self, request: models_pb2.GetModelRequest, context: Any, caller: ApiKey) -> Any:
        return convert.language_model(self.runtime.service.get_model(request.name))

    @unary
    async def ListEmbeddingModels(self, request: empty_pb2.Empty, context: Any, caller: ApiKey) -> Any:
        models = [convert.embedding_model(m) for m in self.runtime.embeddings.list_models()]
        return models_pb2.ListEmbeddingModelsResponse(models=models)

    @unary
    async def GetEmbeddingModel(self, request: models_pb2.GetModelRequest, context: Any, caller: ApiKey) -> Any:
        return convert.embedding_model(self.runtime.embeddings.get_model(request.name))

    @unary
    async def ListImageGenerationModels(self, request: empty_pb2.Empty, context: Any, caller: ApiKey) -> Any:
        return models_pb2.ListImageGenerationModelsResponse()  # this server generates no images

    @unary
    async def GetImageGenerationModel(self, request: models_pb2.GetModelRequest, context: Any, caller: ApiKey) -> Any:
        raise e.NotFound(f"The model {request.name!r} does not exist: this server generates no images.")


class EmbedderServicer(_Base, embed_pb2_grpc.EmbedderServicer):
    @unary
    async def Embed(self, request: embed_pb2.EmbedRequest, context: Any, caller: ApiKey) -> Any:
        if any(i.WhichOneof("input") != "string" for i in request.input):
            raise e.InvalidArgument("input: the embedding models here take text, not images.")
        if request.encoding_format not in (embed_pb2.FORMAT_INVALID, embed_pb2.FORMAT_FLOAT, embed_pb2.FORMAT_BASE64):
            raise e.InvalidArgument("encoding_format is not one the Embedder service defines.")
        done = await self.runtime.embeddings.embed(request.model, [i.string for i in request.input], caller=caller)
        return convert.embedded(done, base64_vectors=request.encoding_format == embed_pb2.FORMAT_BASE64)


class TokenizeServicer(_Base, tokenize_pb2_grpc.TokenizeServicer):
    @unary
    async def TokenizeText(self, request: tokenize_pb2.TokenizeTextRequest, context: Any, caller: ApiKey) -> Any:
        info, tokens = await self.runtime.service.tokenize(request.model, request.text, caller)
        return tokenize_pb2.TokenizeTextResponse(
            tokens=[tokenize_pb2.Token(token_id=t.id, string_token=t.text, token_bytes=t.bytes) for t in tokens],
            model=info.id,
        )


class AuthServicer(_Base, auth_pb2_grpc.AuthServicer):
    @unary
    async def get_api_key_info(self, request: empty_pb2.Empty, context: Any, caller: ApiKey) -> Any:
        return auth_pb2.ApiKey(
            redacted_api_key=caller.redacted,
            user_id="local",
            name=caller.name,
            create_time=convert.timestamp(caller.created),
            modify_time=convert.timestamp(caller.modified),
            modified_by="local",
            team_id="local",
            acls=caller.acls,
            api_key_id=caller.key_id,
        )


FILE_ORDERS = {files_pb2.ASCENDING: "asc", files_pb2.DESCENDING: "desc"}
FILE_SORTS = {
    files_pb2.FILES_SORT_BY_CREATED_AT: "created_at",
    files_pb2.FILES_SORT_BY_FILENAME: "filename",
    files_pb2.FILES_SORT_BY_SIZE: "size",
}


class FilesServicer(_Base, files_pb2_grpc.FilesServicer):
    @client_streaming
    async def UploadFile(self, requests: AsyncIterator[files_pb2.UploadFileChunk], context: Any, caller: ApiKey) -> Any:
        first = await anext(requests, None)
        if first is None or not first.HasField("init"):
            raise e.InvalidArgument("UploadFile's first message must be init (the file's name), then its data.")
        init = first.init

        async def data() -> AsyncIterator[bytes]:
            async for message in requests:
                if message.HasField("init"):
                    raise e.InvalidArgument("UploadFile takes one init message, the first.")
                yield message.data

        expires_after = init.expires_after if init.HasField("expires_after") else None
        record = await self.runtime.files.upload(caller.key_id, init.name, data(), expires_after)
        return convert.file(record)

    @unary
    async def ListFiles(self, request: files_pb2.ListFilesRequest, context: Any, caller: ApiKey) -> Any:
        if request.filter:
            raise e.UnsupportedParameter("Argument not supported: filter (ListFiles)")
        if request.order not in FILE_ORDERS or request.sort_by not in FILE_SORTS:
            raise e.InvalidArgument("order or sort_by is not one of the values the Files API defines.")
        records, token = await self.runtime.files.page(
            caller.key_id, request.limit or 100, FILE_ORDERS[request.order], FILE_SORTS[request.sort_by],
            request.pagination_token,
        )  # fmt: skip
        return files_pb2.ListFilesResponse(data=[convert.file(r) for r in records], pagination_token=token)

    @unary
    async def RetrieveFile(self, request: files_pb2.RetrieveFileRequest, context: Any, caller: ApiKey) -> Any:
        return convert.file(await self.runtime.files.get(request.file_id, caller.key_id))

    @unary
    async def DeleteFile(self, request: files_pb2.DeleteFileRequest, context: Any, caller: ApiKey) -> Any:
        await self.runtime.files.delete(request.file_id, caller.key_id)
        return files_pb2.DeleteFileResponse(id=request.file_id, deleted=True)

    @streaming
    async def RetrieveFileContent(
        self, request: files_pb2.RetrieveFileContentRequest, context: Any, caller: ApiKey
    ) -> AsyncIterator[files_pb2.FileContentChunk]:
        text = request.format == files_pb2.DOWNLOAD_FORMAT_TEXT
        _, chunks = await self.runtime.files.content(request.file_id, caller.key_id, text=text)
        async for chunk in chunks:
            yield files_pb2.FileContentChunk(data=chunk)


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
    server = grpc.aio.server(options=options, interceptors=[lenient_bodies()])
    chat_pb2_grpc.add_ChatServicer_to_server(ChatServicer(runtime), server)
    models_pb2_grpc.add_ModelsServicer_to_server(ModelsServicer(runtime), server)
    tokenize_pb2_grpc.add_TokenizeServicer_to_server(TokenizeServicer(runtime), server)
    auth_pb2_grpc.add_AuthServicer_to_server(AuthServicer(runtime), server)
    files_pb2_grpc.add_FilesServicer_to_server(FilesServicer(runtime), server)
    embed_pb2_grpc.add_EmbedderServicer_to_server(EmbedderServicer(runtime), server)
    collections.add_to(server, runtime)
    batches.add_to(server, runtime)
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
