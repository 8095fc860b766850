"""gRPC call handling on the fake engine, in-process: statuses, the catch-all, request ids, bad bodies.

No model: a real grpc.aio server on a free port, the raw stubs of the official SDK.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import sqlalchemy as sa
from google.protobuf import empty_pb2
from xai_sdk.proto import chat_pb2, chat_pb2_grpc, models_pb2_grpc, sample_pb2, tokenize_pb2, tokenize_pb2_grpc

from localxai.chat import Finished, FinishReason, TextDelta
from localxai.engines.base import GenerationRequest
from localxai.engines.fake import FakeEngine
from localxai.grpcapi.server import grpc_server
from localxai.runtime import Options, Runtime
from localxai.service import MAX_TOKENIZE_CHARS
from localxai.specs import ReasoningSpec
from localxai.store.store import Store, sqlite_url

from conftest import API_KEY, free_port

AUTH = (("authorization", f"Bearer {API_KEY}"),)


class Exploding(FakeEngine):
    """An engine with a bug: its exception text must never reach the client."""

    async def generate(self, request: GenerationRequest) -> Any:
        raise RuntimeError("secret internal detail /etc/passwd")


@dataclass
class Served:
    channel: grpc.aio.Channel
    runtime: Runtime
    limited: tuple[tuple[str, str], ...]  # metadata of a key allowed only "other-model"


@asynccontextmanager
async def serving(engine: FakeEngine | None = None) -> AsyncIterator[Served]:
    store = Store(sqlite_url(Path(tempfile.mkdtemp(prefix="localxai-test-"))))
    _, limited = store.create_key("limited", models=("other-model",))
    runtime = Runtime.build([engine or FakeEngine()], (API_KEY,), store)
    port = free_port()
    async with grpc_server(runtime, "127.0.0.1", port), grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield Served(channel, runtime, (("authorization", f"Bearer {limited}"),))


def chat_request(**fields: Any) -> chat_pb2.GetCompletionsRequest:
    request = chat_pb2.GetCompletionsRequest(**{"model": "fake-model", **fields})
    message = request.messages.add(role=chat_pb2.ROLE_USER)
    message.content.add(text="hi")
    return request


async def failure(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


async def test_status_table() -> None:
    async with serving() as served:
        channel, limited = served.channel, served.limited
        chat = chat_pb2_grpc.ChatStub(channel)
        cases = [
            (chat.GetCompletion(chat_request(), metadata=()), grpc.StatusCode.UNAUTHENTICATED, "No credentials"),
            (
                chat.GetCompletion(chat_request(), metadata=(("authorization", "Bearer wrong-key-xx"),)),
                grpc.StatusCode.UNAUTHENTICATED,
                "Incorrect API key provided: wr***xx",
            ),
            (chat.GetCompletion(chat_request(model="nope"), metadata=AUTH), grpc.StatusCode.NOT_FOUND, "fake-model"),
            (
                chat.GetCompletion(chat_request(temperature=7), metadata=AUTH),
                grpc.StatusCode.INVALID_ARGUMENT,
                "temperature",
            ),
            (chat.GetCompletion(chat_request(), metadata=limited), grpc.StatusCode.PERMISSION_DENIED, "not allowed"),
            (
                tokenize_pb2_grpc.TokenizeStub(channel).TokenizeText(
                    tokenize_pb2.TokenizeTextRequest(model="fake-model", text="a"), metadata=limited
                ),
                grpc.StatusCode.PERMISSION_DENIED,
                "not allowed",
            ),
            (
                tokenize_pb2_grpc.TokenizeStub(channel).TokenizeText(
                    tokenize_pb2.TokenizeTextRequest(model="fake-model", text="a" * (MAX_TOKENIZE_CHARS + 1)),
                    metadata=AUTH,
                ),
                grpc.StatusCode.INVALID_ARGUMENT,
                str(MAX_TOKENIZE_CHARS),
            ),
        ]
        for call, code, text in cases:
            error = await failure(call)
            assert error.code() == code, (error.code(), error.details())
            assert text in (error.details() or "")


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"reasoning_effort": 99}, "reasoning_effort: unknown enum value 99"),
        ({"response_format": chat_pb2.ResponseFormat(format_type=77)}, "response_format.format_type"),
        ({"tool_choice": chat_pb2.ToolChoice(mode=42)}, "tool_choice.mode"),
    ],
)
async def test_unknown_enum_values_are_invalid_argument(fields: dict[str, Any], named: str) -> None:
    async with serving() as served:
        channel = served.channel
        error = await failure(chat_pb2_grpc.ChatStub(channel).GetCompletion(chat_request(**fields), metadata=AUTH))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert named in (error.details() or "")


async def test_unknown_role_is_invalid_argument() -> None:
    request = chat_pb2.GetCompletionsRequest(model="fake-model")
    request.messages.add(role=13).content.add(text="hi")
    async with serving() as served:
        channel = served.channel
        error = await failure(chat_pb2_grpc.ChatStub(channel).GetCompletion(request, metadata=AUTH))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "messages[0].role" in (error.details() or "")


async def test_a_body_that_is_not_protobuf_is_invalid_argument() -> None:
    async with serving() as served:
        channel = served.channel
        raw = channel.unary_unary("/xai_api.Chat/GetCompletion", request_serializer=None, response_deserializer=None)
        error = await failure(raw(b"\xff\xff\xff\xff not protobuf", metadata=AUTH))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid Chat/GetCompletion message" in (error.details() or "")
    assert "Unexpected" not in (error.details() or "")


async def test_unexpected_errors_are_internal_with_the_request_id_only() -> None:
    async with serving(Exploding()) as served:
        channel = served.channel
        chat = chat_pb2_grpc.ChatStub(channel)
        for call in (
            chat.GetCompletion(chat_request(), metadata=AUTH),
            chat.GetCompletionChunk(chat_request(), metadata=AUTH),
        ):
            error = await failure(call if not hasattr(call, "read") else _drain(call))
            assert error.code() == grpc.StatusCode.INTERNAL
            request_id = dict(error.trailing_metadata() or ())["x-request-id"]
            assert error.details() == f"internal error (request id {request_id})"


async def _drain(call: Any) -> None:
    async for _ in call:
        pass


async def test_request_ids_are_taken_from_the_client_or_made() -> None:
    async with serving() as served:
        channel = served.channel
        chat = chat_pb2_grpc.ChatStub(channel)
        call = chat.GetCompletion(chat_request(), metadata=(*AUTH, ("x-request-id", "client-id-42")))
        await call
        assert dict(await call.trailing_metadata())["x-request-id"] == "client-id-42"
        call = chat.GetCompletion(chat_request(), metadata=(*AUTH, ("x-request-id", "bad id with spaces")))
        await call
        made = dict(await call.trailing_metadata())["x-request-id"]
        assert made != "bad id with spaces" and len(made) == 32
        error = await failure(chat.GetCompletion(chat_request(model="nope"), metadata=AUTH))
        assert dict(error.trailing_metadata() or ())["x-request-id"]


async def test_calls_are_counted_per_method_code_and_served_model() -> None:
    async with serving() as served:
        channel, runtime = served.channel, served.runtime
        chat = chat_pb2_grpc.ChatStub(channel)
        await chat.GetCompletion(chat_request(), metadata=AUTH)
        await failure(chat.GetCompletion(chat_request(model="x" * 10_000), metadata=AUTH))
        await models_pb2_grpc.ModelsStub(channel).ListLanguageModels(empty_pb2.Empty(), metadata=AUTH)
        text = runtime.metrics.render().decode()
    assert 'localxai_grpc_requests_total{code="OK",method="Chat/GetCompletion",model="fake-model"} 1.0' in text
    assert 'localxai_grpc_requests_total{code="NOT_FOUND",method="Chat/GetCompletion",model="unknown"} 1.0' in text
    assert 'method="Models/ListLanguageModels"' in text and "xxxx" not in text


async def test_a_database_that_goes_away_is_unavailable() -> None:
    async with serving() as served:
        served.runtime.store.engine = sa.create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")
        chat = chat_pb2_grpc.ChatStub(served.channel)
        error = await failure(chat.GetCompletion(chat_request(), metadata=served.limited))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert error.details() == "The database is unavailable; try again shortly."


async def test_sealed_thinking_goes_out_and_comes_back_as_over_rest() -> None:
    """use_encrypted_content: the answer's thinking comes sealed (unary and streamed, as REST's
    reasoning.encrypted_content), and sent back in a later turn it is the model's thinking again; a blob
    this server did not seal is dropped, never an error."""
    engine = FakeEngine(reply="<think>secret plan</think>done", reasoning=ReasoningSpec())
    async with serving(engine) as served:
        chat = chat_pb2_grpc.ChatStub(served.channel)
        ask = chat_request(use_encrypted_content=True)
        answer = (await chat.GetCompletion(ask, metadata=AUTH)).outputs[0].message
        assert answer.reasoning_content == "secret plan" and answer.encrypted_content.startswith("lx1.")
        assert "secret" not in answer.encrypted_content
        streamed = [c async for c in chat.GetCompletionChunk(ask, metadata=AUTH)]
        sealed = [o.delta.encrypted_content for c in streamed for o in c.outputs if o.delta.encrypted_content]
        assert len(sealed) == 1 and sealed[0].startswith("lx1.")
        seen: list[GenerationRequest] = []
        original = engine.generate

        async def recording(request: GenerationRequest) -> Any:
            seen.append(request)
            return await original(request)

        engine.generate = recording  # type: ignore[method-assign]
        for blob, thinking in ((answer.encrypted_content, "secret plan"), ("lx1.someone-else", None)):
            back = chat_pb2.Message(role=chat_pb2.ROLE_ASSISTANT, encrypted_content=blob)
            back.content.add(text="done")
            later = chat_request()
            later.messages.append(back)
            later.messages.add(role=chat_pb2.ROLE_USER).content.add(text="go on")
            await chat.GetCompletion(later, metadata=AUTH)
            assert seen[-1].chat.messages[1].reasoning == thinking


async def test_server_side_tools_are_refused_or_dropped_as_over_rest() -> None:
    """The core decides for both wires: a 400 naming the tool, or, with `--server-tools drop`, ignored."""
    ask = chat_request()
    ask.tools.add().web_search.SetInParent()
    ask.tools.add().function.name = "get_weather"
    async with serving() as served:
        error = await failure(chat_pb2_grpc.ChatStub(served.channel).GetCompletion(ask, metadata=AUTH))
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
        refusal = "Tool type 'web_search' is not available on this server: web search needs a search backend"
        assert refusal in (error.details() or "")
    store = Store(sqlite_url(Path(tempfile.mkdtemp(prefix="localxai-test-"))))
    runtime = Runtime.build([FakeEngine()], (API_KEY,), store, Options(drop_server_tools=True))
    port = free_port()
    async with grpc_server(runtime, "127.0.0.1", port), grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        answer = await chat_pb2_grpc.ChatStub(channel).GetCompletion(ask, metadata=AUTH)
        assert answer.outputs[0].message.content


class CutShort(FakeEngine):
    """Ends as the core ends a stream at shutdown: the choice finished by length, no usage report."""

    async def generate(self, request: GenerationRequest) -> Any:
        async def events() -> Any:
            yield TextDelta(0, "so far")
            yield Finished(0, FinishReason.LENGTH)

        return events()


async def test_a_stored_stream_cut_short_is_kept_as_over_rest() -> None:
    """The conversation core stores for both wires: a streamed turn cut at shutdown is kept as far as it
    arrived (gRPC dropped it before), and continues like any other."""
    async with serving(CutShort()) as served:
        chat = chat_pb2_grpc.ChatStub(served.channel)
        chunks = [c async for c in chat.GetCompletionChunk(chat_request(store_messages=True), metadata=AUTH)]
        ask = chat_pb2.GetStoredCompletionRequest(response_id=chunks[0].id)
        stored = await chat.GetStoredCompletion(ask, metadata=AUTH)
        assert stored.outputs[0].message.content == "so far"
        assert stored.outputs[0].finish_reason == sample_pb2.REASON_MAX_LEN
