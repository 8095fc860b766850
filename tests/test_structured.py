"""Function calling, structured outputs, logprobs and reasoning through the real embedded model."""

from __future__ import annotations

import datetime
import ipaddress
import json
import math
from typing import Annotated, Any, Literal

import httpx
import jsonschema
import openai
import pytest
from pydantic import BaseModel, Field

from conftest import API_KEY, AUTH, Server, start_server, stop_server

MODEL = "gemma-3-270m"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 20},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"type": "string", "maxLength": 10}},
            "required": ["zone"],
        },
    },
}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def oai(real_server: Server) -> openai.OpenAI:
    return openai.OpenAI(api_key=API_KEY, base_url=real_server.v1, max_retries=0, timeout=120)


def check_call(name: str, arguments: str, tools: list[dict[str, Any]]) -> None:
    [tool] = [t for t in tools if t["function"]["name"] == name]
    jsonschema.validate(json.loads(arguments), tool["function"]["parameters"])


def test_required_tool_call_is_valid(oai: openai.OpenAI) -> None:
    tools = [WEATHER, TIME]
    for seed in (1, 2, 3):
        c = oai.chat.completions.create(
            model=MODEL,
            messages=ASK,
            tools=tools,
            tool_choice="required",
            max_tokens=120,
            seed=seed,  # type: ignore[arg-type]
        )
        choice = c.choices[0]
        assert choice.finish_reason == "tool_calls", choice
        assert choice.message.content == ""
        assert choice.message.tool_calls
        for call in choice.message.tool_calls:
            assert call.id.startswith("call_")
            check_call(call.function.name, call.function.arguments, tools)  # type: ignore[union-attr]


def test_named_function_and_single_call(oai: openai.OpenAI) -> None:
    c = oai.chat.completions.create(
        model=MODEL,
        messages=ASK,
        tools=[WEATHER, TIME],  # type: ignore[list-item]
        tool_choice={"type": "function", "function": {"name": "get_time"}},
        parallel_tool_calls=False,
        max_tokens=80,
        seed=4,
    )
    calls = c.choices[0].message.tool_calls
    assert calls is not None and len(calls) == 1
    assert calls[0].function.name == "get_time"  # type: ignore[union-attr]
    check_call("get_time", calls[0].function.arguments, [TIME])  # type: ignore[union-attr]


def test_required_tool_call_streams_whole_call(oai: openai.OpenAI) -> None:
    stream = oai.chat.completions.create(
        model=MODEL,
        messages=ASK,
        tools=[WEATHER],
        tool_choice="required",
        max_tokens=120,
        seed=5,
        stream=True,  # type: ignore[list-item]
    )
    chunks = list(stream)
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    with_calls = [d for d in deltas if d.tool_calls]
    assert len(with_calls) == 1
    for call in with_calls[0].tool_calls or []:
        assert call.id and call.function and call.function.name == "get_weather"
        check_call("get_weather", call.function.arguments or "", [WEATHER])
    assert not any(d.content for d in deltas)
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_tool_round_trip(oai: openai.OpenAI) -> None:
    first = oai.chat.completions.create(
        model=MODEL,
        messages=ASK,
        tools=[WEATHER],
        tool_choice="required",
        max_tokens=120,
        seed=6,  # type: ignore[list-item]
    )
    call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
    messages = [
        *ASK,
        {"role": "assistant", "tool_calls": [call.model_dump()]},
        {"role": "tool", "content": "40 C", "tool_call_id": call.id},
    ]
    second = oai.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER], max_tokens=8)  # type: ignore[arg-type, list-item]
    assert second.choices[0].finish_reason in ("stop", "length", "tool_calls")


SCHEMAS: list[dict[str, Any]] = [
    {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 12},
            "age": {"type": "integer"},
            "address": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "maxLength": 12},
                    "zip": {"type": "string", "pattern": "^[0-9]{5}$"},
                },
                "required": ["city", "zip"],
            },
        },
        "required": ["name", "age", "address"],
        "additionalProperties": False,
    },
    {
        "type": "object",
        "properties": {
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 8}, "minItems": 1, "maxItems": 3},
            "colour": {"type": "string", "enum": ["red", "green", "blue"]},
            "ok": {"type": "boolean"},
        },
        "required": ["tags", "colour", "ok"],
    },
    {
        "type": "object",
        "properties": {"items": {"type": "array", "maxItems": 2, "items": {"$ref": "#/$defs/item"}}},
        "required": ["items"],
        "$defs": {
            "item": {
                "type": "object",
                "properties": {
                    "sku": {"type": "string", "maxLength": 6},
                    "qty": {"enum": [1, 2, 3]},
                },
                "required": ["sku", "qty"],
            }
        },
    },
]


@pytest.mark.parametrize("schema", SCHEMAS, ids=["nested", "arrays-enums", "refs"])
def test_json_schema_output_validates(oai: openai.OpenAI, schema: dict[str, Any]) -> None:
    for stream in (False, True):
        args: dict[str, Any] = {
            "model": MODEL,
            "messages": [{"role": "user", "content": "Describe a customer as JSON."}],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "out", "schema": schema, "strict": True},
            },
            "max_tokens": 200,
            "seed": 9,
        }
        if stream:
            text = "".join(
                c.choices[0].delta.content or "" for c in oai.chat.completions.create(**args, stream=True) if c.choices
            )
        else:
            try:
                c = oai.chat.completions.create(**args)
            except openai.BadRequestError as exc:
                raise AssertionError(exc.response.text) from None
            assert c.choices[0].finish_reason == "stop"
            text = c.choices[0].message.content or ""
        jsonschema.validate(json.loads(text), schema)


def test_json_object_output_parses(oai: openai.OpenAI) -> None:
    c = oai.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Give me JSON."}],
        response_format={"type": "json_object"},
        max_tokens=300,
        seed=2,
    )
    if c.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(c.choices[0].message.content or ""), dict)
    else:  # cut by max_tokens: still the start of an object
        assert (c.choices[0].message.content or "").lstrip().startswith("{")


def test_schema_that_cannot_be_enforced_is_400(real_server: Server) -> None:
    body = {
        "model": MODEL,
        "messages": ASK,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "x", "schema": {"$ref": "https://example.com/s.json"}},
        },
    }
    r = httpx.post(real_server.v1 + "/chat/completions", json=body, headers=AUTH, timeout=60)
    assert r.status_code == 400
    assert "cannot be enforced" in r.json()["error"]


FORMATS_AND_BOUNDS = {
    "type": "object",
    "properties": {
        "email": {"type": "string", "format": "email", "maxLength": 40},
        "ip": {"type": "string", "format": "ipv4"},
        "day": {"type": "string", "format": "date"},
        "site": {"type": "string", "format": "uri", "maxLength": 40},
        "age": {"type": "integer", "minimum": 18, "maximum": 99},
        "score": {"type": "number", "minimum": 0, "maximum": 1},
        "ref": {"type": "string", "pattern": "REF-[0-9]", "maxLength": 12},
    },
    "required": ["email", "ip", "day", "site", "age", "score", "ref"],
    "additionalProperties": False,
}


def test_formats_bounds_and_unanchored_patterns_are_enforced(oai: openai.OpenAI) -> None:
    checked = 0
    for seed in (1, 2):
        c = oai.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Describe a customer as JSON."}],
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "customer", "schema": FORMATS_AND_BOUNDS, "strict": True},
            },
            max_tokens=400,
            seed=seed,
        )
        assert c.choices[0].finish_reason == "stop", c
        value = json.loads(c.choices[0].message.content or "")
        jsonschema.Draft202012Validator(FORMATS_AND_BOUNDS, format_checker=jsonschema.FormatChecker()).validate(value)
        rs = pytest.importorskip("jsonschema_rs")
        assert rs.validator_for(FORMATS_AND_BOUNDS, validate_formats=True).is_valid(value), value
        ipaddress.IPv4Address(value["ip"])
        datetime.date.fromisoformat(value["day"])
        assert "REF-" in value["ref"] and len(value["ref"]) <= 12
        checked += 1
    assert checked == 2


class Cat(BaseModel):
    kind: Literal["cat"]
    name: str = Field(max_length=10)


class Dog(BaseModel):
    kind: Literal["dog"]
    bark: int = Field(ge=1, le=5)


class Adoption(BaseModel):
    pet: Annotated[Cat | Dog, Field(discriminator="kind")]
    code: str = Field(pattern=r"^[A-Z]+$", max_length=4)
    ref: str = Field(pattern="ab", max_length=6)
    count: int = Field(ge=1, le=3)


def test_pydantic_models_parse_through_the_openai_client(oai: openai.OpenAI) -> None:
    """A discriminated union (oneOf + discriminator), pattern with max_length, ge/le: as client libraries send them."""
    kinds = set()
    for seed in (1, 2, 3):
        try:
            c = oai.chat.completions.parse(
                model=MODEL,
                messages=[{"role": "user", "content": "Record an adoption."}],
                response_format=Adoption,
                max_tokens=200,
                seed=seed,
            )
        except openai.BadRequestError as exc:
            raise AssertionError(exc.response.text) from None
        parsed = c.choices[0].message.parsed
        assert isinstance(parsed, Adoption), c
        jsonschema.validate(json.loads(c.choices[0].message.content or ""), Adoption.model_json_schema())
        assert len(parsed.code) <= 4 and "ab" in parsed.ref
        kinds.add(parsed.pet.kind)
    assert kinds <= {"cat", "dog"}


def test_unknown_format_is_400_in_response_format_and_tool_parameters(real_server: Server) -> None:
    schema = {"type": "object", "properties": {"x": {"type": "string", "format": "made-up"}}, "required": ["x"]}
    tool = {"type": "function", "function": {"name": "f", "parameters": schema}}
    base = {"model": MODEL, "messages": ASK, "max_tokens": 10}
    for body in (
        {**base, "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}},
        {**base, "tools": [tool], "tool_choice": "required"},
    ):
        r = httpx.post(real_server.v1 + "/chat/completions", json=body, headers=AUTH, timeout=60)
        assert r.status_code == 400, r.text
        assert "'format'" in r.json()["error"] and "'made-up'" in r.json()["error"], r.text


ESSAY = {
    "type": "function",
    "function": {
        "name": "write_essays",
        "parameters": {
            "type": "object",
            "properties": {
                "essays": {"type": "array", "items": {"type": "string", "minLength": 1000}, "minItems": 40},
            },
            "required": ["essays"],
        },
    },
}


def test_a_forced_call_that_cannot_fit_its_budget_is_refused_before_generating(oai: openai.OpenAI) -> None:
    """The shortest call ESSAY allows (40 essays of 1,000 characters) takes more than max_tokens: a 400
    that names the limit, streaming or not (tests/test_forced_budget.py: calls that fit always end whole)."""
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as caught:
            oai.chat.completions.create(
                model=MODEL,
                messages=ASK,
                tools=[ESSAY],  # type: ignore[list-item]
                tool_choice={"type": "function", "function": {"name": "write_essays"}},
                max_tokens=300,
                stream=stream,
            )
        message = caught.value.response.json()["error"]
        assert "the 300 this request may generate (max_tokens)" in message, message
        assert message.startswith("The shortest tool call the schema allows takes "), message


def test_logprobs(oai: openai.OpenAI) -> None:
    c = oai.chat.completions.create(model=MODEL, messages=ASK, max_tokens=5, logprobs=True, top_logprobs=3, seed=1)
    content = c.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content is not None and len(content) == c.usage.completion_tokens  # type: ignore[union-attr]
    for entry in content:
        assert entry.logprob <= 0 and entry.bytes is not None
        assert len(entry.top_logprobs) == 3
        values = [t.logprob for t in entry.top_logprobs]
        assert values == sorted(values, reverse=True)
        assert entry.logprob <= values[0] + 1e-6
        assert math.isfinite(entry.logprob)
    streamed = oai.chat.completions.create(model=MODEL, messages=ASK, max_tokens=5, logprobs=True, seed=1, stream=True)
    entries = [
        e for ch in streamed if ch.choices and ch.choices[0].logprobs for e in ch.choices[0].logprobs.content or []
    ]
    assert len(entries) == 5


def test_reasoning_model_split(tmp_path_factory: pytest.TempPathFactory) -> None:
    """A model configured as reasoning, whose thinking runs until the first newline (a test config):
    the real engine splits thinking from answer and accounts for it as xAI does."""
    server = start_server(
        tmp_path_factory.mktemp("reasoning"),
        "--ctx-size",
        "512",
        "--parallel",
        "1",
        "--reasoning-tags",
        "<think>",
        "\n",
        "--reasoning-open",
        "--reasoning-efforts",
        "low,high",
    )
    try:
        body = {
            "model": MODEL,
            "messages": [{"role": "user", "content": "Write two lines of a poem."}],
            "max_tokens": 40,
            "temperature": 0,
            "reasoning_effort": "low",
        }
        r = httpx.post(server.v1 + "/chat/completions", json=body, headers={"Authorization": "Bearer x"}, timeout=60)
        assert r.status_code == 200, r.text
        result = r.json()
        message, usage = result["choices"][0]["message"], result["usage"]
        reasoning_tokens = usage["completion_tokens_details"]["reasoning_tokens"]
        assert message["reasoning_content"] and "\n" not in message["reasoning_content"]
        assert reasoning_tokens > 0
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] + reasoning_tokens
        assert usage["completion_tokens"] + reasoning_tokens <= 40
        refused = httpx.post(
            server.v1 + "/chat/completions", json={**body, "stop": ["x"]}, headers={"Authorization": "Bearer x"}
        )
        assert refused.status_code == 400
        assert refused.json()["error"] == f"Model {MODEL} does not support parameter stop"
    finally:
        stop_server(server)
