"""Schemas are bounded before anything compiles them: one request must not kill the server.

`maxLength: 100000` used to become a grammar nested 100,000 deep and llama.cpp's parser overflowed
its stack (SIGSEGV); `maxItems: 10**9` made the conversion grow to tens of GB.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from localxai.engines.llamacpp.grammar import MAX_GRAMMAR_DEPTH, nesting_depth, schema_to_gbnf
from localxai.errors import InvalidArgument
from localxai.schemas import MAX_DEPTH, MAX_REPEAT, parse_schema

from conftest import API_KEY, AUTH, Server

INVALID = "Client specified an invalid argument"


def nested(depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


@pytest.mark.parametrize(
    ("schema", "named"),
    [
        ({"type": "string", "maxLength": 100_000}, "'maxLength'"),
        ({"type": "string", "minLength": 5000}, "'minLength'"),
        ({"type": "array", "items": {"type": "integer"}, "maxItems": 10**9}, "'maxItems'"),
        ({"type": "array", "minItems": 1001}, "'minItems'"),
        ({"type": "object", "properties": {"x": {"type": "string", "maxLength": 100_000}}}, "schema.properties.x"),
        ({"type": "string", "pattern": "^a{100000}$"}, "{100000}"),
        ({"type": "string", "pattern": "^((a{100}){100}){100}$"}, "nested repetitions"),
        (nested(200), f"more than {MAX_DEPTH} levels"),
        ("deeper than Python's recursion limit", f"more than {MAX_DEPTH} levels"),
        ({"enum": list(range(30_000))}, "too large"),
    ],
)
def test_unbounded_schemas_are_refused_naming_the_limit(schema: Any, named: str) -> None:
    text = '{"items": ' * 5000 + "{}" + "}" * 5000 if isinstance(schema, str) else json.dumps(schema)
    with pytest.raises(InvalidArgument) as caught:
        parse_schema(text, "response_format.json_schema.schema")
    assert named in caught.value.message


def test_bounded_schemas_pass() -> None:
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": MAX_REPEAT},
            "tags": {"type": "array", "items": {"type": "string"}, "maxItems": MAX_REPEAT},
            "date": {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}$"},
            "email": {"type": "string", "pattern": r"^[a-z]{1,100}@[a-z]{1,100}\.com$"},
            "deep": nested(20),
        },
        "required": ["name"],
    }
    assert parse_schema(json.dumps(schema), "s") == schema


def test_grammar_depth_is_measured_outside_literals() -> None:
    assert nesting_depth('root ::= ("(" ( [)(] x )? )? # (((((') == 2
    assert nesting_depth('root ::= "\\"((" (a)') == 1


def test_grammar_of_the_largest_bounded_schema_is_within_the_parser_limit() -> None:
    gbnf = schema_to_gbnf(json.dumps({"type": "string", "maxLength": MAX_REPEAT}))
    assert MAX_REPEAT <= nesting_depth(gbnf) <= MAX_GRAMMAR_DEPTH


def test_the_converter_refuses_a_grammar_nested_too_deep() -> None:
    # Reached only if the core's bounds were bypassed: the engine still never compiles it.
    with pytest.raises(InvalidArgument, match="too large"):
        schema_to_gbnf(json.dumps({"type": "string", "maxLength": MAX_GRAMMAR_DEPTH + 10}))


POISON = {"type": "object", "properties": {"x": {"type": "string", "maxLength": 100_000}}}


async def test_poison_schema_is_400_everywhere_a_schema_goes(client: httpx.AsyncClient) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": POISON}}
    tool = {"type": "function", "function": {"name": "f", "parameters": POISON}}
    base = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}
    for body in (
        {**base, "response_format": fmt},
        {**base, "tools": [tool], "tool_choice": "required"},
        {**base, "tools": [tool]},
        {**base, "response_format": fmt, "deferred": True},
        {**base, "response_format": fmt, "stream": True},
    ):
        r = await client.post("/v1/chat/completions", json=body)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["code"] == INVALID and "'maxLength'" in r.json()["error"]


@pytest.mark.model
def test_real_server_survives_the_crash_schemas(real_server: Server) -> None:
    oai = openai.OpenAI(api_key=API_KEY, base_url=real_server.v1, max_retries=0, timeout=120)
    for schema in (POISON, {"type": "array", "items": {"type": "integer"}, "maxItems": 10**9}):
        with pytest.raises(openai.BadRequestError):
            oai.chat.completions.create(
                model="gemma-3-270m",
                messages=[{"role": "user", "content": "hi"}],
                response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
            )
    # The largest bounded repetition compiles in the real engine and is enforced.
    schema = {"type": "object", "properties": {"x": {"type": "string", "maxLength": MAX_REPEAT}}, "required": ["x"]}
    r = httpx.post(
        real_server.v1 + "/chat/completions",
        headers=AUTH,
        timeout=120,
        json={
            "model": "gemma-3-270m",
            "messages": [{"role": "user", "content": "Give me JSON."}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
            "max_tokens": 40,
            "seed": 1,
        },
    )
    assert r.status_code == 200, r.text
    assert real_server.process.poll() is None
    assert httpx.get(real_server.base_url + "/health").status_code == 200


def test_counts_that_python_cannot_convert_or_that_are_floats_are_bounded_too() -> None:
    for schema in ({"type": "string", "pattern": "a{" + "9" * 5000 + "}"}, {"type": "array", "maxItems": 1e9}):
        with pytest.raises(InvalidArgument, match="this server enforces at most"):
            parse_schema(json.dumps(schema), "s")
