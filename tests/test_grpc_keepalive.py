"""Long gRPC calls are not cut by the client's keepalive pings.

xai-sdk pings every 30 s, also while a call waits (reasoning). grpc's default server policy answers
the third ping within 5 minutes with GOAWAY `too_many_pings`, and the SDK's retry policy then
started the generation over. Here the window is made short instead of the call long: the client
pings every second (grpc's shortest client interval) during a 5 s call that sends nothing until it ends.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import grpc
import pytest
from xai_sdk import client as sdk_client
from xai_sdk.proto import chat_pb2, chat_pb2_grpc

from localxai.engines.fake import FakeEngine
from localxai.grpcapi.server import MIN_PING_INTERVAL_MS, grpc_server
from localxai.runtime import Runtime
from localxai.store.store import Store, sqlite_url

from conftest import API_KEY, free_port

PING_MS = 1000


def sdk_option(name: str) -> int:
    return int(dict(sdk_client._DEFAULT_CHANNEL_OPTIONS)[name])


def test_the_server_accepts_the_official_sdk_s_ping_rate() -> None:
    assert sdk_option("grpc.keepalive_permit_without_calls") == 1
    assert sdk_option("grpc.keepalive_time_ms") >= MIN_PING_INTERVAL_MS * 2  # with room for jitter


async def long_quiet_call(min_ping_interval_ms: int) -> chat_pb2.GetChatCompletionResponse:
    runtime = Runtime.build(
        [FakeEngine(reply="one two three four five six seven eight nine ten", token_delay=0.5)],
        (API_KEY,),
        Store(sqlite_url(Path(tempfile.mkdtemp(prefix="localxai-test-")))),
    )
    port = free_port()
    # The SDK's ping settings, scaled down from 30 s to PING_MS.
    options = [
        ("grpc.keepalive_time_ms", PING_MS),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]
    request = chat_pb2.GetCompletionsRequest(model="fake-model", messages=[chat_pb2.Message(role=chat_pb2.ROLE_USER)])
    request.messages[0].content.add(text="hi")
    async with (
        grpc_server(runtime, "127.0.0.1", port, min_ping_interval_ms=min_ping_interval_ms),
        grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) as channel,
    ):
        return await chat_pb2_grpc.ChatStub(channel).GetCompletion(
            request, metadata=[("authorization", f"Bearer {API_KEY}")], timeout=30
        )


async def test_a_call_longer_than_the_ping_window_completes() -> None:
    response = await long_quiet_call(min_ping_interval_ms=PING_MS // 2)
    assert response.outputs[0].message.content.startswith("one two")


async def test_grpc_s_default_ping_policy_cuts_the_same_call() -> None:
    """The control: with grpc's default policy (5 minutes) the same call is cut, so the test above
    really exercises the ping policy."""
    with pytest.raises(grpc.aio.AioRpcError) as cut:
        await long_quiet_call(min_ping_interval_ms=300_000)
    assert cut.value.code() == grpc.StatusCode.UNAVAILABLE
