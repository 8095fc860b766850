"""The official xai-sdk (gRPC), sync and async, against a real `localxai serve` with the real model."""

from __future__ import annotations

import asyncio
import datetime
import time

import grpc
import pytest
from xai_sdk import AsyncClient, Client
from xai_sdk.chat import image, system, user
from xai_sdk.proto import chat_pb2, chat_pb2_grpc, deferred_pb2

from conftest import API_KEY, AUTH, Server

MODEL = "gemma-3-270m"


@pytest.fixture(scope="module")
def client(real_server: Server) -> Client:
    return Client(api_key=API_KEY, api_host=f"localhost:{real_server.grpc_port}", timeout=3600)


def test_seed_example_verbatim(real_server: Server) -> None:
    client = Client(api_key=API_KEY, api_host=f"localhost:{real_server.grpc_port}", timeout=3600)

    chat = client.chat.create(model="grok-4")
    chat.append(system("You are Grok, a highly intelligent, helpful AI assistant."))
    chat.append(user("What is the meaning of life, the universe, and everything?"))

    response = chat.sample()
    assert isinstance(response.content, str)
    assert response.finish_reason in ("REASON_STOP", "REASON_MAX_LEN")
    assert response.role == "ROLE_ASSISTANT"
    assert response.usage.prompt_tokens > 10
    assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens


def test_sample_shape_and_seed(client: Client) -> None:
    def run() -> str:
        chat = client.chat.create(model=MODEL, max_tokens=8, seed=42, temperature=0.9)
        chat.append(user("Tell me a story."))
        response = chat.sample()
        assert response.id and response.system_fingerprint.startswith("fp_")
        assert response.usage.completion_tokens <= 8
        return response.content

    first = run()
    assert first and run() == first


def test_stream(client: Client) -> None:
    chat = client.chat.create(model=MODEL, max_tokens=10, seed=3)
    chat.append(user("Count slowly."))
    pieces = []
    response = None
    for response, chunk in chat.stream():  # noqa: B007 - the last response is the whole answer
        pieces.append(chunk.content)
    assert response is not None
    assert response.content == "".join(pieces)
    assert response.content
    assert response.finish_reason in ("REASON_STOP", "REASON_MAX_LEN")
    assert 1 <= response.usage.completion_tokens <= 10


def test_defer(client: Client) -> None:
    chat = client.chat.create(model=MODEL, max_tokens=6)
    chat.append(user("Say something."))
    response = chat.defer()
    assert isinstance(response.content, str)
    assert response.usage.completion_tokens <= 6


def test_multi_turn(client: Client) -> None:
    chat = client.chat.create(model=MODEL, max_tokens=6)
    chat.append(system("Be brief."))
    chat.append(user("Hi!"))
    chat.append(chat.sample())
    chat.append(user("And again?"))
    response = chat.sample()
    assert response.usage.prompt_tokens > 10


def test_image_on_text_only_model_is_refused(client: Client) -> None:
    chat = client.chat.create(model=MODEL, max_tokens=4)
    chat.append(user("What is this?", image("https://example.com/cat.png", detail="high")))
    with pytest.raises(grpc.RpcError) as info:
        chat.sample()
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "does not support image input" in (info.value.details() or "")


def test_tokenize_models_and_key(client: Client) -> None:
    tokens = client.tokenize.tokenize_text("Hello world", model="grok-4")
    assert "".join(t.string_token for t in tokens) == "Hello world"
    models = client.models.list_language_models()
    assert [m.name for m in models] == [MODEL]
    assert list(models[0].aliases) == ["grok-4"]
    assert client.models.get_language_model("grok-4").name == MODEL
    key = client.auth.get_api_key_info()
    assert key.redacted_api_key == "xai-...6789"


def test_errors(real_server: Server, client: Client) -> None:
    bad = Client(api_key="wrong-key-xx", api_host=f"localhost:{real_server.grpc_port}")
    with pytest.raises(grpc.RpcError) as info:
        bad.models.list_language_models()
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "Incorrect API key provided: wr***xx" in (info.value.details() or "")
    chat = client.chat.create(model="grok-1", max_tokens=2)
    chat.append(user("hi"))
    with pytest.raises(grpc.RpcError) as info:
        chat.sample()
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    chat = client.chat.create(model=MODEL, max_tokens=2, temperature=5)
    chat.append(user("hi"))
    with pytest.raises(grpc.RpcError) as info:
        chat.sample()
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "temperature" in (info.value.details() or "")


def test_async_client_and_cancellation(real_server: Server) -> None:
    async def run() -> None:
        client = AsyncClient(api_key=API_KEY, api_host=f"localhost:{real_server.grpc_port}")
        chat = client.chat.create(model=MODEL, max_tokens=5)
        chat.append(user("Hello"))
        response = await chat.sample()
        assert response.usage.completion_tokens <= 5
        long = client.chat.create(model=MODEL, max_tokens=1500, temperature=0)
        long.append(user("Write an endless story."))
        first_chunk = asyncio.Event()

        async def consume() -> None:
            async for _response, _chunk in long.stream():
                first_chunk.set()

        task = asyncio.create_task(consume())
        await first_chunk.wait()
        task.cancel()  # the client gives up: gRPC cancels the call, the server must stop generating
        await asyncio.gather(task, return_exceptions=True)

    needle = "generation cancelled after"
    seen = real_server.log.read_text().count(needle)
    asyncio.run(run())
    deadline = time.monotonic() + 60
    while real_server.log.read_text().count(needle) <= seen:
        assert time.monotonic() < deadline, "cancelled gRPC stream kept generating"
        time.sleep(0.1)


def test_tools_parse_and_logprobs(client: Client) -> None:
    import json

    import jsonschema
    from pydantic import BaseModel
    from xai_sdk.chat import tool, tool_result

    parameters = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 20}, "unit": {"type": "string", "enum": ["c", "f"]}},
        "required": ["city", "unit"],
    }
    chat = client.chat.create(
        model=MODEL, tools=[tool("get_weather", "Weather in a city", parameters)], tool_choice="required", seed=1
    )
    chat.append(user("What is the weather in Paris?"))
    response = chat.sample()
    assert response.finish_reason == "REASON_TOOL_CALLS"
    assert response.tool_calls
    for call in response.tool_calls:
        assert call.function.name == "get_weather" and call.id.startswith("call_")
        jsonschema.validate(json.loads(call.function.arguments), parameters)
    chat.append(response)
    chat.append(tool_result("40 C", tool_call_id=response.tool_calls[0].id))
    follow_up = client.chat.create(model=MODEL, messages=list(chat.messages), max_tokens=4)
    assert follow_up.sample().finish_reason in ("REASON_STOP", "REASON_MAX_LEN")

    class City(BaseModel):
        name: str
        country: str
        population: int

    chat = client.chat.create(model=MODEL, max_tokens=200, seed=3)
    chat.append(user("Describe a city."))
    _response, city = chat.parse(City)
    assert isinstance(city, City)

    chat = client.chat.create(model=MODEL, max_tokens=3, logprobs=True, top_logprobs=2)
    chat.append(user("Hi"))
    response = chat.sample()
    assert len(response.logprobs.content) == response.usage.completion_tokens
    assert all(len(e.top_logprobs) == 2 and e.logprob <= 0 for e in response.logprobs.content)


def test_crash_inputs_are_clean_errors(real_server: Server, client: Client) -> None:
    """The crashers over gRPC: a schema that once killed the server, a deferred id the database
    cannot store (NUL), a poison deferred request — each a clean status, and the server lives on."""
    from pydantic import BaseModel, Field

    class Huge(BaseModel):
        text: str = Field(max_length=100_000)

    chat = client.chat.create(model=MODEL, max_tokens=4)
    chat.append(user("hi"))
    with pytest.raises(grpc.RpcError) as info:
        chat.parse(Huge)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'maxLength'" in (info.value.details() or "")

    chat = client.chat.create(
        model=MODEL,
        max_tokens=4,
        response_format=chat_pb2.ResponseFormat(
            format_type=chat_pb2.FORMAT_TYPE_JSON_SCHEMA, schema='{"type": "string", "maxLength": 100000}'
        ),
    )
    chat.append(user("hi"))
    with pytest.raises(grpc.RpcError) as info:
        chat.defer(timeout=datetime.timedelta(seconds=30))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    stub = chat_pb2_grpc.ChatStub(grpc.insecure_channel(f"localhost:{real_server.grpc_port}"))
    with pytest.raises(grpc.RpcError) as info:
        stub.GetDeferredCompletion(
            deferred_pb2.GetDeferredRequest(request_id="nul\x00' OR 1=1"),
            metadata=[("authorization", f"Bearer {API_KEY}")],
        )
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert "sql" not in (info.value.details() or "").lower()
    assert real_server.process.poll() is None


def test_stored_completions_continue_get_and_delete(real_server: Server, client: Client) -> None:
    """store_messages / previous_response_id / get / delete over gRPC, sharing ids with REST's
    /v1/responses (one store): a gRPC-stored turn continues over REST and back."""
    import httpx
    import openai

    chat = client.chat.create(model=MODEL, max_tokens=6, store_messages=True)
    chat.append(system("You are a travel assistant. " * 10))
    chat.append(user("Name a city."))
    first = chat.sample()
    [stored] = client.chat.get_stored_completion(first.id)
    assert stored.content == first.content
    follow = client.chat.create(model=MODEL, max_tokens=6, previous_response_id=first.id, store_messages=True)
    follow.append(user("And another?"))
    second = follow.sample()
    assert second.usage.prompt_tokens > first.usage.prompt_tokens
    assert second.usage.cached_prompt_text_tokens >= first.usage.prompt_tokens - 1  # the stored prefix reused
    streamed = client.chat.create(model=MODEL, max_tokens=6, previous_response_id=second.id, store_messages=True)
    streamed.append(user("A third?"))
    for last, _ in streamed.stream():  # noqa: B007 - the last response is the whole answer
        pass
    assert client.chat.get_stored_completion(last.id)[0].content == last.content
    rest = openai.OpenAI(api_key=API_KEY, base_url=real_server.v1, max_retries=0)
    over_rest = rest.responses.create(model=MODEL, previous_response_id=last.id, input="A fourth?", max_output_tokens=6)
    assert client.chat.get_stored_completion(over_rest.id)[0].content == over_rest.output_text
    assert client.chat.delete_stored_completion(first.id) == first.id
    with pytest.raises(grpc.RpcError) as gone:
        client.chat.get_stored_completion(first.id)
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND
    # The continuation kept its own resolved context: deleting an ancestor loses nothing.
    assert client.chat.get_stored_completion(second.id)[0].content == second.content
    assert httpx.get(f"{real_server.v1}/responses/{second.id}", headers=AUTH).status_code == 200


def test_compact_context_stands_in_for_the_conversation(real_server: Server, client: Client) -> None:
    chat = client.chat.create(model="gemma-3-270m", max_tokens=16, temperature=0)
    chat.append(system("You are a terse assistant."))
    chat.append(user("My name is Ada and I live in Lisbon. " * 55))
    chat.append(chat.sample())
    before = list(chat.messages)
    compact = chat.compact()  # the SDK replaces the messages with one holding the sealed summary
    assert compact.dropped_message_count == 3 and compact.encrypted_content and compact.usage.completion_tokens > 0
    chat.append(user("Where do I live?"))
    after = chat.sample()
    whole = client.chat.create(model="gemma-3-270m", max_tokens=16, temperature=0)
    for message in before:
        whole.append(message)
    whole.append(user("Where do I live?"))
    # Everything before the compaction is dropped: the summary (at most a quarter of the context) stands for it.
    assert after.usage.prompt_tokens < whole.sample().usage.prompt_tokens
    forged = client.chat.create(model="gemma-3-270m", max_tokens=4)
    forged.append(user("hi"))
    forged.append(chat_pb2.Message(role=chat_pb2.ROLE_USER, encrypted_content="not-a-blob"))
    forged.append(user("again"))
    assert forged.sample().usage.prompt_tokens > 0  # another server's blob is ignored, not an error
    with pytest.raises(grpc.RpcError) as empty:
        client.chat.compact_context(model="gemma-3-270m", messages=[])
    assert empty.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_me(real_server: Server) -> None:
    import httpx

    me = httpx.get(f"{real_server.v1}/me", headers=AUTH).json()
    assert me["user_id"] and me["api_key"]["redacted_api_key"].startswith("xai-") and me["team_blocked"] is False
