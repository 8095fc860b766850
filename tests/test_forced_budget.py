"""Forced calls and structured outputs end as whole, schema-valid documents within their token budget,
through the real model on both wires (engines/llamacpp/budget.py does the steering).

The base model, sampled, likes to write inside a string until its budget runs out: without the budget
steering that left no call at all (issue 33). Every schema here invites that: free strings, lists of
them, nested objects.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import openai
import pytest
from pydantic import BaseModel, Field
from xai_sdk import Client
from xai_sdk.chat import tool, user

from conftest import API_KEY, Server

MODEL = "gemma-3-270m"
CLIENTS = Path(__file__).parent / "clients"
PYTHON_CLIENTS = Path(__file__).parent.parent / ".venv-clients" / "bin" / "python"
STRING = {"type": "string"}
SCHEMAS: list[dict[str, Any]] = [
    {"type": "object", "properties": {"story": STRING}, "required": ["story"]},
    {"type": "object", "properties": {"title": STRING, "body": STRING, "tags": {"type": "array", "items": STRING}},
     "required": ["title", "body", "tags"]},
    {"type": "object", "properties": {"lines": {"type": "array", "items": STRING, "minItems": 3}},
     "required": ["lines"]},
    {"type": "object", "properties": {"author": {"type": "object", "properties": {"name": STRING, "bio": STRING},
     "required": ["name", "bio"]}, "year": {"type": "integer"}}, "required": ["author", "year"]},
    {"type": "object", "properties": {"steps": {"type": "array", "items": {"type": "object", "properties": {
     "what": STRING, "why": STRING}, "required": ["what", "why"]}, "minItems": 2}}, "required": ["steps"]},
    {"type": "object", "properties": {"code": {"type": "string", "minLength": 10}, "language": {"enum": ["py", "js"]}},
     "required": ["language", "code"]},
    {"type": "object", "properties": {"matrix": {"type": "array", "items": {"type": "array", "items": STRING}}},
     "required": ["matrix"]},
    {"type": "object", "properties": {"a": {"type": "object", "properties": {"b": {"type": "object", "properties": {
     "c": STRING}, "required": ["c"]}}, "required": ["b"]}, "note": STRING}, "required": ["a", "note"]},
    {"type": "object", "properties": {"when": {"type": "string", "format": "date"}, "summary": STRING},
     "required": ["summary", "when"]},
    {"type": "object", "properties": {"rating": {"type": "integer", "minimum": 1, "maximum": 5},
     "review": {"type": "string", "maxLength": 400}}, "required": ["review", "rating"]},
]  # fmt: skip
CASES = [(i, schema, budget) for i, schema in enumerate(SCHEMAS) for budget in (32, 48)]
PROMPT = "Tell me everything you know, at length, in the arguments."


def tool_name(i: int) -> str:
    return f"record_{i}"


@pytest.fixture(scope="module")
def oai(real_server: Server) -> openai.OpenAI:
    return openai.OpenAI(api_key=API_KEY, base_url=real_server.v1, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def xai(real_server: Server) -> Client:
    return Client(api_key=API_KEY, api_host=f"localhost:{real_server.grpc_port}", timeout=120)


@pytest.mark.parametrize(("i", "schema", "budget"), CASES, ids=[f"{i}-{b}" for i, _, b in CASES])
def test_forced_calls_end_whole_within_small_budgets_over_rest(
    oai: openai.OpenAI, i: int, schema: dict[str, Any], budget: int
) -> None:
    choice: Any = "required" if budget == 32 else {"type": "function", "function": {"name": tool_name(i)}}
    c = oai.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": PROMPT}],
        tools=[{"type": "function", "function": {"name": tool_name(i), "parameters": schema}}],
        tool_choice=choice,
        max_tokens=budget,
        temperature=1.0,
        seed=i,
    )
    calls = c.choices[0].message.tool_calls or []
    assert c.choices[0].finish_reason == "tool_calls" and calls, c
    for call in calls:  # parallel calls are allowed: each is whole
        assert call.function.name == tool_name(i)  # type: ignore[union-attr]
        jsonschema.validate(json.loads(call.function.arguments), schema)  # type: ignore[union-attr]
    assert c.usage is not None and c.usage.completion_tokens <= budget


@pytest.mark.parametrize(("i", "schema", "budget"), CASES, ids=[f"{i}-{b}" for i, _, b in CASES])
def test_forced_calls_end_whole_within_small_budgets_over_grpc(
    xai: Client, i: int, schema: dict[str, Any], budget: int
) -> None:
    chat = xai.chat.create(
        model=MODEL,
        tools=[tool(tool_name(i), "", schema)],
        tool_choice="required",
        max_tokens=budget,
        temperature=1.0,
        seed=100 + i,
    )
    chat.append(user(PROMPT))
    response = chat.sample()
    assert response.finish_reason == "REASON_TOOL_CALLS" and response.tool_calls, response
    for call in response.tool_calls:
        jsonschema.validate(json.loads(call.function.arguments), schema)
    assert response.usage.completion_tokens <= budget


def test_forced_calls_in_the_responses_api_end_whole(oai: openai.OpenAI) -> None:
    for i in (0, 4, 7):
        r = oai.responses.create(
            model=MODEL,
            input=PROMPT,
            tools=[{"type": "function", "name": tool_name(i), "parameters": SCHEMAS[i], "strict": False}],
            tool_choice="required",
            max_output_tokens=40,
            temperature=1.0,
            store=False,
        )
        calls = [item for item in r.output if item.type == "function_call"]
        assert r.status == "completed" and calls, r
        for call in calls:
            jsonschema.validate(json.loads(call.arguments), SCHEMAS[i])
        assert r.usage is not None and r.usage.output_tokens <= 40


def test_structured_output_cut_by_max_tokens_is_valid_json_marked_length(oai: openai.OpenAI, xai: Client) -> None:
    """response_format: the document is closed within max_tokens, and finish_reason says the budget cut it
    ("length"), so the openai parse helper raises LengthFinishReasonError rather than hand over cut values."""
    schema = SCHEMAS[1]
    fmt: Any = {"type": "json_schema", "json_schema": {"name": "article", "schema": schema}}
    lengths = 0
    for seed in range(4):
        c = oai.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": PROMPT}],
            response_format=fmt,
            max_tokens=20,
            temperature=1.0,
            seed=seed,
        )
        jsonschema.validate(json.loads(c.choices[0].message.content or ""), schema)
        assert c.usage is not None and c.usage.completion_tokens <= 20
        lengths += c.choices[0].finish_reason == "length"
    assert lengths  # the budget did cut some of them
    chat = xai.chat.create(model=MODEL, response_format="json_object", max_tokens=12, temperature=1.0, seed=3)
    chat.append(user(PROMPT))
    response = chat.sample()
    assert isinstance(json.loads(response.content), dict)
    assert response.usage.completion_tokens <= 12

    class Article(BaseModel):
        title: str
        body: str

    with pytest.raises(openai.LengthFinishReasonError):
        for seed in range(4):
            oai.chat.completions.parse(
                model=MODEL,
                messages=[{"role": "user", "content": PROMPT}],
                response_format=Article,
                max_tokens=12,
                temperature=1.0,
                seed=seed,
            )


class Person(BaseModel):
    name: str
    biography: str = Field(description="everything known about the person, in detail")
    hobbies: list[str]


def test_the_openai_parse_helper_with_a_forced_tool_passes_every_time(oai: openai.OpenAI) -> None:
    person_tool = openai.pydantic_function_tool(Person)
    for seed in range(10):
        c = oai.chat.completions.parse(
            model=MODEL,
            messages=[{"role": "user", "content": "Ada Lovelace wrote the first program. Describe her."}],
            tools=[person_tool],
            tool_choice={"type": "function", "function": {"name": "Person"}},
            max_tokens=48,
            temperature=1.0,
            seed=seed,
        )
        calls = c.choices[0].message.tool_calls or []
        assert calls and all(isinstance(call.function.parsed_arguments, Person) for call in calls), c


def test_instructor_from_xai_tools_mode_passes_every_time(real_server: Server) -> None:
    assert PYTHON_CLIENTS.exists(), "run `make test` (it builds .venv-clients: make py-clients)"
    done = subprocess.run(
        [str(PYTHON_CLIENTS), "instructor_xai.py", f"localhost:{real_server.grpc_port}", API_KEY, MODEL, "10", "48"],
        cwd=CLIENTS,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    runs = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(runs) == 10, done.stdout[-3000:]
    failed = [run["error"] for run in runs if not run["ok"]]
    assert not failed, failed
