"""The Responses API with the official OpenAI Python client against a real server and the real model."""

from __future__ import annotations

import json
import re
import signal
import uuid
from pathlib import Path

import openai
import pytest
from pydantic import BaseModel, Field

from localxai import lark_regex

from conftest import API_KEY, Server, start_server, stop_server

MODEL = "gemma-3-270m"


@pytest.fixture(scope="module")
def client(real_server: Server) -> openai.OpenAI:
    return openai.OpenAI(api_key=API_KEY, base_url=real_server.v1, max_retries=0, timeout=120)


def test_create_retrieve_delete(client: openai.OpenAI) -> None:
    response = client.responses.create(model=MODEL, input="Say hello.", max_output_tokens=8, temperature=0)
    assert response.status in ("completed", "incomplete") and response.output_text
    assert response.usage is not None and response.usage.input_tokens > 0
    again = client.responses.retrieve(response.id)
    assert again.output_text == response.output_text
    client.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)


def test_stream_helper_and_event_order(client: openai.OpenAI) -> None:
    kinds = []
    # A grammar makes the answer end by itself (a base model may ramble past any cap: then `incomplete`).
    short = {"format": {"type": "json_schema", "name": "answer", "schema": {"type": "string", "enum": ["yes", "no"]}}}
    with client.responses.stream(model=MODEL, input="Is Paris in France?", text=short) as stream:
        for event in stream:
            kinds.append(event.type)
        final = stream.get_final_response()
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert "response.output_text.delta" in kinds and json.loads(final.output_text) in ("yes", "no")


def test_three_turns_with_previous_response_id_reuse_the_cache(client: openai.OpenAI) -> None:
    system = "You are a helpful assistant for a travel agency. " * 20
    first = client.responses.create(model=MODEL, instructions=system, input="Hello.", max_output_tokens=8)
    second = client.responses.create(model=MODEL, previous_response_id=first.id, input="Paris?", max_output_tokens=8)
    third = client.responses.create(model=MODEL, previous_response_id=second.id, input="Rome?", max_output_tokens=8)
    assert second.usage is not None and third.usage is not None and first.usage is not None
    assert third.usage.input_tokens > second.usage.input_tokens > first.usage.input_tokens
    # The continued prompt starts with what the engine saw last time: the prefix cache holds it.
    assert second.usage.input_tokens_details.cached_tokens >= first.usage.input_tokens - 1
    assert third.usage.input_tokens_details.cached_tokens >= second.usage.input_tokens - 1


def test_input_items_with_the_openai_client(client: openai.OpenAI) -> None:
    first = client.responses.create(model=MODEL, instructions="Be brief.", input="Name a color.", max_output_tokens=4)
    second = client.responses.create(model=MODEL, previous_response_id=first.id, input="Another?", max_output_tokens=4)
    listed = client.responses.input_items.list(second.id, order="asc")
    assert [(item.type, getattr(item, "role", None)) for item in listed.data] == [
        ("message", "system"),
        ("message", "user"),
        ("message", "assistant"),
        ("message", "user"),
    ]
    texts = [item.content[0].text for item in listed.data if item.type == "message"]
    assert texts == ["Be brief.", "Name a color.", first.output_text, "Another?"]
    assert listed.has_more is False
    # Auto-pagination one item a page, newest first (the default order): `after` is the last id of a page.
    assert [item.id for item in client.responses.input_items.list(second.id, limit=1)] == [
        item.id for item in reversed(listed.data)
    ]
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.input_items.list(second.id, limit=0)
    assert refused.value.response.json() == {
        "code": "Client specified an invalid argument",
        "error": "limit must be an integer between 1 and 100, got '0'.",
    }
    with pytest.raises(openai.NotFoundError):
        client.responses.input_items.list(str(uuid.uuid4()))


class City(BaseModel):
    name: str
    country: str


def test_parse_with_a_pydantic_model(client: openai.OpenAI) -> None:
    # Greedy: sampled at the default temperature, the small base model sometimes fills a string with
    # one character until max_output_tokens cuts the JSON short (the grammar allows any length).
    response = client.responses.parse(
        model=MODEL, input="A city in France, as JSON.", text_format=City, max_output_tokens=60, temperature=0
    )
    assert isinstance(response.output_parsed, City)


def test_function_tool_round_trip(client: openai.OpenAI) -> None:
    tools = [
        {
            "type": "function",
            "name": "get_weather",
            "description": "The weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        }
    ]
    first = client.responses.create(
        model=MODEL, input="Weather in Paris?", tools=tools, tool_choice="required", parallel_tool_calls=False
    )
    [call] = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather" and "city" in json.loads(call.arguments)
    answer = client.responses.create(
        model=MODEL,
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": '{"temp_c": 18}'}],
        max_output_tokens=16,
    )
    assert answer.status in ("completed", "incomplete") and answer.output


def test_a_custom_tool_with_a_lark_grammar_gets_input_in_its_language(client: openai.OpenAI) -> None:
    """Codex's apply_patch tool, as OpenAI's custom tools define it: the model's input is a patch."""
    grammar = (Path(__file__).parent / "fixtures" / "apply_patch.lark").read_text()
    tool = {"type": "custom", "name": "apply_patch", "description": "Edit files with a patch.",
            "format": {"type": "grammar", "syntax": "lark", "definition": grammar}}  # fmt: skip
    response = client.responses.create(model=MODEL, input="Create hello.txt containing hi.", tools=[tool],
                                       tool_choice="required", temperature=0, max_output_tokens=200)  # fmt: skip
    [call] = [item for item in response.output if item.type == "custom_tool_call"][:1]
    assert call.name == "apply_patch"
    assert call.input.startswith("*** Begin Patch\n*** ") and call.input.rstrip("\n").endswith("*** End Patch")
    assert re.fullmatch(lark_regex.to_regex(grammar), call.input)


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_a_conversation_survives_kill_9_between_turns(
    tmp_path: Path, database: str, request: pytest.FixtureRequest
) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}" if database == "sqlite" else request.getfixturevalue("pg_url")
    args = ("--api-key", API_KEY, "--database-url", url, "--ctx-size", "1024")
    server = start_server(tmp_path, *args)
    try:
        first = openai.OpenAI(api_key=API_KEY, base_url=server.v1, max_retries=0).responses.create(
            model=MODEL, input="Name a color.", max_output_tokens=4
        )
    finally:
        server.process.send_signal(signal.SIGKILL)
        server.process.wait()
    server = start_server(tmp_path, *args)
    try:
        client = openai.OpenAI(api_key=API_KEY, base_url=server.v1, max_retries=0)
        assert client.responses.retrieve(first.id).output_text == first.output_text
        second = client.responses.create(
            model=MODEL, previous_response_id=first.id, input="Another?", max_output_tokens=4
        )
        assert second.usage is not None and first.usage is not None
        assert second.usage.input_tokens > first.usage.input_tokens
    finally:
        stop_server(server)


def test_openai_agents_sdk_runs_a_tool_with_its_default_responses_model(real_server: Server) -> None:
    """An `Agent` with a function tool, on the SDK's default model class (the Responses API)."""
    from agents import Agent, ModelSettings, OpenAIResponsesModel, RunConfig, Runner, function_tool
    from openai import AsyncOpenAI

    calls: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        calls.append(city)
        return f"It is 18 degrees and sunny in {city}."

    class Report(BaseModel):
        summary: str = Field(max_length=40)

    model = OpenAIResponsesModel(model=MODEL, openai_client=AsyncOpenAI(api_key=API_KEY, base_url=real_server.v1))
    agent = Agent(
        name="weather",
        instructions="Answer with the weather tool.",
        tools=[get_weather],
        model=model,
        output_type=Report,  # a structured final answer: the grammar ends it (a base model would ramble)
        # The small base model calls the tool only when made to; the SDK resets the choice after a call.
        model_settings=ModelSettings(tool_choice="required", max_tokens=200, temperature=0),
    )
    result = Runner.run_sync(agent, "What is the weather in Paris?", run_config=RunConfig(tracing_disabled=True))
    assert calls, "the agent never called the tool"
    assert any(item.type == "tool_call_output_item" for item in result.new_items)
    assert isinstance(result.final_output, Report)


def test_compact_with_the_openai_client(client: openai.OpenAI) -> None:
    first = client.responses.create(model=MODEL, input="My name is Ada and I live in Lyon.", max_output_tokens=6)
    compacted = client.responses.compact(model=MODEL, previous_response_id=first.id)
    assert compacted.object == "response.compaction"
    assert [item.type for item in compacted.output] == ["message", "compaction"]
    # The SDK types every compacted item as an output item, so dumping the user message (input_text
    # parts, as OpenAI sends them) warns that it is not an assistant message: the warning is the SDK's.
    kept = [item.model_dump(warnings=False) for item in compacted.output]
    follow = client.responses.create(
        model=MODEL,
        input=[*kept, {"role": "user", "content": "Where?"}],
        max_output_tokens=6,
    )
    assert follow.status in ("completed", "incomplete")
