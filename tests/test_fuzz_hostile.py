"""Hostile input on both wires: lone surrogates, NUL bytes, deep nesting, huge numbers, unknown enums,
bodies that are not protobuf. Never a 5xx (INTERNAL/UNKNOWN over gRPC), never internal text.

Deterministic (derandomized hypothesis), on the fake engine, against a real gRPC server on a port.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from xai_sdk.proto import chat_pb2, chat_pb2_grpc, deferred_pb2, tokenize_pb2, tokenize_pb2_grpc

from localxai.engines.fake import FakeEngine
from localxai.grpcapi.server import grpc_server
from localxai.runtime import Runtime
from localxai.store.store import Store, sqlite_url

from conftest import API_KEY, AUTH, fake_app, free_port

INTERNALS = ("Traceback", "Unexpected <class", "Error:", "sqlalchemy", "psycopg", "RecursionError", 'File "')
HOSTILE_TEXT = st.text(st.characters(categories=["Cs", "Cc", "Lu", "So"]), max_size=12) | st.sampled_from(
    ["\x00", "a\x00b", "\ud800", "\udfff\ud800", "\u2028", "%00", "' OR 1=1 --", "x" * 5000]
)
HUGE = st.sampled_from([2**31, 2**63, -(2**63), 10**30, 1e308, -1e308, 0, -1])


def nested(depth: int) -> str:
    return '{"type": "object", "properties": {"a": ' * depth + "{}" + "}}" * depth


SCHEMAS = st.sampled_from([nested(70), nested(500), nested(3000), '{"type": "string", "maxLength": 1e400}'])
VALUES = st.recursive(
    st.none() | st.booleans() | HUGE | HOSTILE_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(HOSTILE_TEXT, inner, max_size=3),
    max_leaves=6,
)
FIELDS = ["model", "temperature", "max_tokens", "n", "seed", "stop", "messages", "tools", "response_format", "user"]
APP = fake_app(FakeEngine(reply="ok"))


def assert_clean_rest(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"code", "error"}, body
        assert not any(marker in body["error"] for marker in INTERNALS), body


async def post(path: str, raw: str) -> httpx.Response:
    headers = {**AUTH, "Content-Type": "application/json"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=APP), base_url="http://t", headers=headers) as c:
        return await c.post(path, content=raw)


@given(st.dictionaries(st.sampled_from(FIELDS), VALUES, max_size=4), HOSTILE_TEXT)
@settings(max_examples=120, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_rest_hostile_values(overrides: dict[str, Any], text: str) -> None:
    body = {"model": "fake-model", "messages": [{"role": "user", "content": text or "hi"}], **overrides}
    raw = json.dumps(body)  # ensure_ascii: lone surrogates and NUL travel as JSON escapes
    assert_clean_rest(asyncio.run(post("/v1/chat/completions", raw)))
    assert_clean_rest(asyncio.run(post("/v1/tokenize-text", json.dumps({"model": "fake-model", "text": text}))))


@given(SCHEMAS, st.sampled_from(["response_format", "tool"]), st.booleans())
@settings(max_examples=16, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_rest_deep_and_huge_schemas(schema: str, where: str, deferred: bool) -> None:
    if where == "response_format":
        extra = f'"response_format": {{"type": "json_schema", "json_schema": {{"name": "x", "schema": {schema}}}}}'
    else:
        extra = f'"tools": [{{"type": "function", "function": {{"name": "f", "parameters": {schema}}}}}]'
    raw = (
        '{"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], '
        f'"deferred": {json.dumps(deferred)}, {extra}}}'
    )
    response = asyncio.run(post("/v1/chat/completions", raw))
    assert_clean_rest(response)
    assert response.status_code in (400, 422)


@pytest.fixture(scope="module")
def grpc_port() -> Iterator[int]:
    """A real gRPC server on the fake engine, on its own event loop in a thread."""
    port = free_port()
    ready, stop = threading.Event(), threading.Event()

    async def serve() -> None:
        store = Store(sqlite_url(Path(tempfile.mkdtemp(prefix="localxai-test-"))))
        runtime = Runtime.build([FakeEngine(reply="ok")], (API_KEY,), store)
        async with grpc_server(runtime, "127.0.0.1", port):
            ready.set()
            while not stop.is_set():
                await asyncio.sleep(0.05)

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    assert ready.wait(30)
    yield port
    stop.set()
    thread.join(30)


METADATA = (("authorization", f"Bearer {API_KEY}"),)
CLEAN_CODES = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
}
ENUM = st.integers(min_value=-3, max_value=2**31 - 1)
PROTO_TEXT = st.text(st.characters(categories=["Cc", "Lu", "So"]), max_size=12) | st.sampled_from(["\x00", "x" * 5000])


@st.composite
def chat_requests(draw: st.DrawFn) -> chat_pb2.GetCompletionsRequest:
    request = chat_pb2.GetCompletionsRequest(model=draw(st.sampled_from(["fake-model", "\x00", "x" * 300])))
    message = request.messages.add(role=draw(st.sampled_from([1, 2, 3, draw(ENUM)])))
    message.content.add(text=draw(PROTO_TEXT))
    if draw(st.booleans()):
        request.reasoning_effort = draw(ENUM)
    if draw(st.booleans()):
        request.response_format.format_type = draw(st.sampled_from([1, 2, 3, draw(ENUM)]))
        request.response_format.schema = draw(SCHEMAS | PROTO_TEXT)
    if draw(st.booleans()):
        request.tool_choice.mode = draw(ENUM)
    if draw(st.booleans()):
        request.temperature = draw(st.sampled_from([float("nan"), float("inf"), -1.0, 1e30, 0.5]))
    if draw(st.booleans()):
        request.max_tokens = draw(st.integers(min_value=-(2**31), max_value=2**31 - 1))
    if draw(st.booleans()):
        request.n = draw(st.integers(min_value=-(2**31), max_value=2**31 - 1))
    if draw(st.booleans()):
        function = request.tools.add().function
        function.name = draw(PROTO_TEXT)
        function.parameters = draw(SCHEMAS | PROTO_TEXT)
    return request


def assert_clean_grpc(call: Any) -> None:
    try:
        call()
    except grpc.RpcError as error:
        assert error.code() in CLEAN_CODES, (error.code(), error.details())
        assert not any(marker in (error.details() or "") for marker in INTERNALS), error.details()


@given(chat_requests())
@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_grpc_hostile_requests(grpc_port: int, request: chat_pb2.GetCompletionsRequest) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        chat = chat_pb2_grpc.ChatStub(channel)
        assert_clean_grpc(lambda: chat.GetCompletion(request, metadata=METADATA, timeout=30))
        assert_clean_grpc(lambda: list(chat.GetCompletionChunk(request, metadata=METADATA, timeout=30)))
        assert_clean_grpc(lambda: chat.StartDeferredCompletion(request, metadata=METADATA, timeout=30))


RAW_METHODS = ("/xai_api.Chat/GetCompletion", "/xai_api.Tokenize/TokenizeText", "/xai_api.Models/GetLanguageModel")


@given(st.binary(max_size=64), PROTO_TEXT)
@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_grpc_bodies_that_are_not_protobuf_and_odd_ids(grpc_port: int, body: bytes, text: str) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        for method in (
            "/xai_api.Chat/GetCompletion",
            "/xai_api.Tokenize/TokenizeText",
            "/xai_api.Models/GetLanguageModel",
        ):
            raw = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
            assert_clean_grpc(lambda raw=raw: raw(body, metadata=METADATA, timeout=30))
        chat = chat_pb2_grpc.ChatStub(channel)
        get = deferred_pb2.GetDeferredRequest(request_id=text)
        assert_clean_grpc(lambda: chat.GetDeferredCompletion(get, metadata=METADATA, timeout=30))
        tokenize = tokenize_pb2.TokenizeTextRequest(model="fake-model", text=text)
        assert_clean_grpc(lambda: tokenize_pb2_grpc.TokenizeStub(channel).TokenizeText(tokenize, metadata=METADATA))
