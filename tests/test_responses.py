"""The Responses API (/v1/responses) on the fake engine: shapes, the event stream, stored responses,
continuation, and every refusal in xAI's format."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest

from localxai.chat import TextDelta
from localxai.engines.fake import FakeEngine

from conftest import API_KEY, app_client, fake_app

INVALID = "Client specified an invalid argument"
OTHER_KEY = "xai-another-key-0000"
WEATHER = {"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}}


@pytest.fixture
async def api() -> Any:
    async with app_client(fake_app(FakeEngine(reply="hello there"), keys=(API_KEY, OTHER_KEY))) as c:
        yield c


def events(text: str) -> list[dict[str, Any]]:
    """Strict `event:` + `data:` framing; keep-alive comments skipped; no [DONE]."""
    out = []
    for block in text.strip().split("\n\n"):
        if block.startswith(":"):
            continue
        kind, data = block.split("\n")
        assert kind.startswith("event: ") and data.startswith("data: "), block
        payload = json.loads(data[len("data: ") :])
        assert payload["type"] == kind[len("event: ") :]
        out.append(payload)
    return out


async def test_plain_response_shape(api: httpx.AsyncClient) -> None:
    r = await api.post("/v1/responses", json={"model": "fake-model", "input": "hi there", "max_output_tokens": 50})
    assert r.status_code == 200, r.text
    body = r.json()
    rid = body["id"]
    assert str(uuid.UUID(rid)) == rid and body["object"] == "response" and body["status"] == "completed"
    [message] = body["output"]
    assert message == {
        "content": [{"type": "output_text", "text": "hello there", "logprobs": [], "annotations": []}],
        "id": f"msg_{rid}",
        "role": "assistant",
        "type": "message",
        "status": "completed",
    }
    usage = body["usage"]
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert usage["output_tokens_details"] == {"reasoning_tokens": 0} and usage["num_server_side_tools_used"] == 0
    assert body["max_output_tokens"] == 50 and body["store"] is True and body["tool_choice"] == "auto"
    assert body["text"] == {"format": {"type": "text"}} and body["previous_response_id"] is None


async def test_stream_event_sequence(api: httpx.AsyncClient) -> None:
    r = await api.post("/v1/responses", json={"model": "fake-model", "input": "hi", "stream": True})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert "[DONE]" not in r.text
    stream = events(r.text)
    assert [e["sequence_number"] for e in stream] == list(range(len(stream)))
    kinds = [e["type"] for e in stream]
    deltas = kinds.count("response.output_text.delta")
    assert deltas >= 2
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * deltas,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert stream[0]["response"]["status"] == "in_progress" and stream[0]["response"]["usage"] is None
    final = stream[-1]["response"]
    assert "".join(e["delta"] for e in stream if e["type"] == "response.output_text.delta") == "hello there"
    assert final["output"][0]["content"][0]["text"] == "hello there" and final["usage"]["output_tokens"] > 0
    stored = await api.get(f"/v1/responses/{final['id']}")
    assert stored.json()["output"] == final["output"]


async def test_stored_responses_get_delete_and_ownership(api: httpx.AsyncClient) -> None:
    created = (await api.post("/v1/responses", json={"model": "fake-model", "input": "hi"})).json()
    url = f"/v1/responses/{created['id']}"
    fetched = await api.get(url)
    assert fetched.status_code == 200
    assert {k: v for k, v in fetched.json().items() if k != "completed_at"} == {
        k: v for k, v in created.items() if k != "completed_at"
    }
    assert (await api.get(url, headers={"Authorization": f"Bearer {OTHER_KEY}"})).status_code == 404
    assert (await api.delete(url, headers={"Authorization": f"Bearer {OTHER_KEY}"})).status_code == 404
    deleted = await api.delete(url)
    assert deleted.json() == {"id": created["id"], "object": "response", "deleted": True}
    gone = await api.get(url)
    assert gone.status_code == 404
    assert gone.json() == {
        "code": "Some requested entity was not found",
        "error": "No responses could be found with the given response_id",
    }
    unstored = (await api.post("/v1/responses", json={"model": "fake-model", "input": "hi", "store": False})).json()
    assert unstored["store"] is False
    assert (await api.get(f"/v1/responses/{unstored['id']}")).status_code == 404


async def test_previous_response_id_continues_the_conversation(api: httpx.AsyncClient) -> None:
    first = (await api.post("/v1/responses", json={"model": "fake-model", "input": "one two three"})).json()
    second = await api.post(
        "/v1/responses", json={"model": "fake-model", "input": "four", "previous_response_id": first["id"]}
    )
    assert second.status_code == 200
    body = second.json()
    assert body["previous_response_id"] == first["id"]
    # The context is the first turn, its answer, then the new input: more input tokens than the first.
    assert body["usage"]["input_tokens"] > first["usage"]["input_tokens"] + 2
    with_instructions = await api.post(
        "/v1/responses",
        json={"model": "fake-model", "input": "x", "previous_response_id": first["id"], "instructions": "Be brief."},
    )
    assert with_instructions.status_code == 400 and with_instructions.json()["code"] == INVALID
    for unknown in (str(uuid.uuid4()), "not-an-id", "nul%00"):
        r = await api.post("/v1/responses", json={"model": "fake-model", "input": "x", "previous_response_id": unknown})
        assert r.status_code == 404, unknown


async def test_output_cap_makes_the_response_incomplete(api: httpx.AsyncClient) -> None:
    body = (await api.post("/v1/responses", json={"model": "fake-model", "input": "hi", "max_output_tokens": 1})).json()
    assert body["status"] == "incomplete" and body["incomplete_details"] == {"reason": "max_output_tokens"}
    r = await api.post(
        "/v1/responses", json={"model": "fake-model", "input": "hi", "max_output_tokens": 1, "stream": True}
    )
    assert events(r.text)[-1]["type"] == "response.incomplete"


async def test_function_call_round_trip() -> None:
    reply = '{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}'
    async with app_client(fake_app(FakeEngine(reply=reply))) as api:
        r = await api.post("/v1/responses", json={"model": "fake-model", "input": "weather?", "tools": [WEATHER]})
        body = r.json()
        [call] = body["output"]
        assert call["type"] == "function_call" and call["name"] == "get_weather" and call["status"] == "completed"
        assert json.loads(call["arguments"]) == {"city": "Paris"} and call["id"].startswith("fc_")
        streamed = events(
            (
                await api.post(
                    "/v1/responses", json={"model": "fake-model", "input": "w?", "tools": [WEATHER], "stream": True}
                )
            ).text
        )
        kinds = [e["type"] for e in streamed]
        assert kinds[2:] == [
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed",
        ]
        assert streamed[3]["delta"] == streamed[4]["arguments"] == streamed[5]["item"]["arguments"]
        # Continue statefully with the tool's output, then statelessly by resending the call.
        output = {"type": "function_call_output", "call_id": call["call_id"], "output": '{"temp_c": 18}'}
        r = await api.post(
            "/v1/responses",
            json={"model": "fake-model", "input": [output], "previous_response_id": body["id"], "tools": [WEATHER]},
        )
        assert r.status_code == 200, r.text
        stateless = [
            {"role": "user", "content": "weather?"},
            {k: call[k] for k in ("type", "call_id", "name", "arguments")},
            output,
        ]
        assert (await api.post("/v1/responses", json={"model": "fake-model", "input": stateless})).status_code == 200


@pytest.mark.parametrize(
    ("extra", "status", "needle"),
    [
        ({"background": True, "store": False}, 400, "background requires store=true"),
        ({"tools": [{"type": "web_search"}]}, 400, "Tool type 'web_search' is not available on this server"),
        ({"tools": [{"type": "mcp", "server_url": "x"}]}, 400, "Tool type 'mcp'"),
        ({"tools": [{"type": "attachment_search", "limit": "x"}]}, 400, "limit"),
        ({"tools": [{"type": "attachment_search", "file_ids": ["file_x"]}]}, 400, "file_ids"),
        ({"input": [{"type": "function_call_output", "call_id": "call_1", "output": "x"}]}, 400, "call_1"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f", "file_url": "u"}]}]},
            400,
            "exactly one",
        ),
        ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "file_x"}]}]}, 404, "not found"),
        ({"input": [{"type": "image_generation_output"}]}, 400, "image_generation_output"),
        ({"input": [{"role": "robot", "content": "x"}]}, 400, "role"),
        ({"search_parameters": {"mode": "auto"}}, 410, "Live search is deprecated"),
        ({"model": "nope"}, 404, "fake-model"),
        ({"temperature": 9}, 400, "temperature"),
        ({"tool_choice": {"type": "function", "name": "missing"}, "tools": [WEATHER]}, 400, "missing"),
        (
            {"text": {"format": {"type": "json_schema", "schema": {"type": "string", "maxLength": 10**6}}}},
            400,
            "maxLength",
        ),
        ({"input": 5}, 422, "input"),
        ({"tools": [{**WEATHER, "description": {"__type__": "Usage"}}]}, 400, "description must be a string"),
        ({"tools": [{"type": ["function"]}]}, 400, "type must be a string"),
        ({"tool_choice": {"type": "function", "function": "x"}, "tools": [WEATHER]}, 400, "tool_choice"),
        ({"text": {"format": "json_object"}}, 400, "text.format must be an object"),
        ({"text": {"format": {"type": "json_schema", "json_schema": "x"}}}, 400, "schema"),
        ({"input": [{"role": ["user"], "content": "x"}]}, 400, "role must be a string"),
        ({"input": [{"type": ["message"]}]}, 400, "type must be a string"),
    ],
)
async def test_refusals(api: httpx.AsyncClient, extra: dict[str, Any], status: int, needle: str) -> None:
    for stream in (False, True):  # refused before the first byte, streamed or not
        r = await api.post("/v1/responses", json={"model": "fake-model", "input": "hi", "stream": stream, **extra})
        assert r.status_code == status, r.text
        assert set(r.json()) == {"code", "error"} and needle in r.json()["error"]


async def test_reasoning_items_and_server_tool_history_are_accepted(api: httpx.AsyncClient) -> None:
    history = [
        {"role": "user", "content": [{"type": "input_text", "text": "hi"}]},
        {"type": "reasoning", "id": "rs_x", "encrypted_content": "foreign-blob"},  # no summary (Codex)
        {"type": "web_search_call", "id": "ws_1", "status": "completed"},
        {"role": "assistant", "content": [{"type": "output_text", "text": "hello"}]},
        {"role": "developer", "content": "Be brief."},
        {"type": "message", "role": "user", "content": "again"},
    ]
    assert (await api.post("/v1/responses", json={"model": "fake-model", "input": history})).status_code == 200


async def test_anthropic_messages_is_gone_as_at_xai(api: httpx.AsyncClient) -> None:
    r = await api.post("/v1/messages", json={"model": "fake-model", "max_tokens": 5, "messages": []})
    assert r.status_code == 410
    assert "removed from the xAI API on February 20, 2026" in r.json()["error"]


async def test_server_tools_can_be_dropped_by_the_operator(tmp_path: Any) -> None:
    from localxai.httpapi.app import create_app
    from localxai.runtime import Options, Runtime
    from localxai.store.store import Store, sqlite_url

    runtime = Runtime.build([FakeEngine()], (API_KEY,), Store(sqlite_url(tmp_path)), Options(drop_server_tools=True))
    async with app_client(create_app(runtime)) as api:
        body = {"model": "fake-model", "input": "hi", "tools": [{"type": "web_search"}, WEATHER]}
        r = await api.post("/v1/responses", json=body)
        assert r.status_code == 200
        assert [t["name"] for t in r.json()["tools"]] == ["get_weather"]


async def test_compaction_summarises_and_the_blob_stands_in_for_the_history(tmp_path: Any) -> None:
    from localxai.httpapi.app import create_app
    from localxai.runtime import Runtime
    from localxai.store.store import Store, sqlite_url

    engine = Spy(reply="The user likes Paris.", context_length=2048)
    runtime = Runtime.build([engine], (API_KEY,), Store(sqlite_url(tmp_path)))
    async with app_client(create_app(runtime)) as api:
        first = (await api.post("/v1/responses", json={"model": "fake-model", "input": "I like Paris."})).json()
        r = await api.post("/v1/responses/compact", json={"model": "fake-model", "previous_response_id": first["id"]})
        assert r.status_code == 200, r.text
        # A summary leaves room to go on: at most a quarter of the context (a rambling one filled a
        # 1,024-token context, and the next turn was refused as too long).
        assert Spy.last.chat.sampling.max_tokens == 2048 // 4
        compacted = r.json()
        assert compacted["object"] == "response.compaction" and compacted["usage"]["output_tokens"] > 0
        *users, item = compacted["output"]
        assert [u["content"][0]["text"] for u in users] == ["I like Paris."]
        assert item["type"] == "compaction" and item["id"].startswith("cmp_")
        assert item["encrypted_content"].startswith("lx1.") and "Paris" not in item["encrypted_content"]
        # The next turn sends the compacted output instead of the history: the summary reaches the model.
        r = await api.post(
            "/v1/responses",
            json={"model": "fake-model", "input": [*compacted["output"], {"role": "user", "content": "And now?"}]},
        )
        assert r.status_code == 200
        assert any("The user likes Paris." in m.text for m in Spy.last.chat.messages if m.role.value == "system")
        # Another deployment's compaction blob is dropped, not an error.
        foreign = {"type": "compaction", "id": "cmp_x", "encrypted_content": "opaque"}
        r = await api.post(
            "/v1/responses", json={"model": "fake-model", "input": [foreign, {"role": "user", "content": "hi"}]}
        )
        assert r.status_code == 200


class Spy(FakeEngine):
    """Keeps the last request it was asked to generate."""

    last: Any = None

    async def generate(self, request: Any) -> Any:
        Spy.last = request
        return await super().generate(request)


async def test_encrypted_reasoning_round_trips_and_foreign_blobs_are_dropped(tmp_path: Any) -> None:
    from localxai.httpapi.app import create_app
    from localxai.runtime import Runtime
    from localxai.sealing import COMPACTION, REASONING
    from localxai.specs import ReasoningSpec
    from localxai.store.store import Store, sqlite_url

    engine = Spy(reply="<think>Paris is in France.</think>Yes.", reasoning=ReasoningSpec())
    runtime = Runtime.build([engine], (API_KEY,), Store(sqlite_url(tmp_path)))
    async with app_client(create_app(runtime)) as api:
        body = {"model": "fake-model", "input": "Is Paris in France?", "include": ["reasoning.encrypted_content"]}
        first = (await api.post("/v1/responses", json=body)).json()
        reasoning, message = first["output"]
        assert message["content"][0]["text"] == "Yes."
        assert reasoning["summary"] == [{"text": "Paris is in France.", "type": "summary_text"}]
        blob = reasoning["encrypted_content"]
        assert blob.startswith("lx1.") and "Paris" not in blob
        streamed = events((await api.post("/v1/responses", json={**body, "stream": True})).text)
        assert streamed[-1]["response"]["output"][0]["encrypted_content"].startswith("lx1.")
        kinds = [e["type"] for e in streamed]
        thinking, answer = (
            kinds.count("response.reasoning_summary_text.delta"),
            kinds.count("response.output_text.delta"),
        )
        assert kinds == [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.reasoning_summary_part.added",
            *["response.reasoning_summary_text.delta"] * thinking,
            "response.reasoning_summary_text.done",
            "response.reasoning_summary_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.content_part.added",
            *["response.output_text.delta"] * answer,
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
        assert thinking >= 1 and answer >= 1 and [e.get("output_index") for e in streamed[2:4]] == [0, 0]
        # Sent back statelessly: our blob goes back to the model with its turn; a foreign one is dropped.
        for sent, opened in ((blob, "Paris is in France."), ("gAAAA-foreign", None), (blob[:-4] + "AAAA", None)):
            history = [
                {"role": "user", "content": "Is Paris in France?"},
                {"type": "reasoning", "id": reasoning["id"], "summary": [], "encrypted_content": sent},
                {"role": "assistant", "content": "Yes."},
                {"role": "user", "content": "And Rome?"},
            ]
            r = await api.post("/v1/responses", json={"model": "fake-model", "input": history})
            assert r.status_code == 200, r.text
            assert Spy.last.chat.messages[1].role.value == "assistant" and Spy.last.chat.messages[1].reasoning == opened
    # Another process on the same database opens it too (the secret lives in the store).
    again = Runtime.build([FakeEngine()], (API_KEY,), Store(sqlite_url(tmp_path)))
    assert again.sealer.open(blob, REASONING) == "Paris is in France."
    assert again.sealer.open(blob, COMPACTION) is None  # a blob opens only as what it was sealed for
    other = Runtime.build([FakeEngine()], (API_KEY,), Store(sqlite_url(tmp_path / "other")))
    assert other.sealer.open(blob, REASONING) is None


class Breaking(FakeEngine):
    """Answers a word, then its upstream goes away."""

    async def generate(self, request: Any) -> Any:
        from localxai.errors import Unavailable

        async def events() -> Any:
            yield TextDelta(0, "par")
            raise Unavailable("The upstream engine of model fake-model failed mid-stream.")

        return events()


async def test_a_stream_that_breaks_ends_with_an_error_event_and_is_stored_as_failed() -> None:
    async with app_client(fake_app(Breaking())) as api:
        r = await api.post("/v1/responses", json={"model": "fake-model", "input": "hi", "stream": True})
        stream = events(r.text)
        assert stream[-1] == {
            "sequence_number": len(stream) - 1,
            "type": "error",
            "code": None,
            "message": "The upstream engine of model fake-model failed mid-stream.",
            "param": None,
        }
        stored = (await api.get(f"/v1/responses/{stream[0]['response']['id']}")).json()
        assert stored["status"] == "failed" and stored["output"] == [] and stored["usage"] is None
        assert stored["error"]["message"] == "The upstream engine of model fake-model failed mid-stream."


async def test_logprobs_in_the_output_text_and_its_deltas(api: httpx.AsyncClient) -> None:
    body = {"model": "fake-model", "input": "hi", "logprobs": True, "top_logprobs": 2}
    out = (await api.post("/v1/responses", json=body)).json()
    [part] = out["output"][0]["content"]
    assert len(part["logprobs"]) == 2  # "hello", "there"
    assert set(part["logprobs"][0]) == {"token", "logprob", "bytes", "top_logprobs"}
    assert len(part["logprobs"][0]["top_logprobs"]) == 2
    stream = events((await api.post("/v1/responses", json={**body, "stream": True})).text)
    deltas = [e for e in stream if e["type"] == "response.output_text.delta"]
    assert all(len(d["logprobs"]) == 1 for d in deltas)
    done = next(e for e in stream if e["type"] == "response.output_text.done")
    assert [p["token"] for p in done["logprobs"]] == [p["token"] for p in part["logprobs"]]
    plain = (await api.post("/v1/responses", json={"model": "fake-model", "input": "hi"})).json()
    assert plain["output"][0]["content"][0]["logprobs"] == []


async def test_input_items_list_the_resolved_input_owner_only() -> None:
    """Chain history (the answer's call included), then the request's own input; newest first by default."""
    reply = '{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}'
    async with app_client(fake_app(FakeEngine(reply=reply), keys=(API_KEY, OTHER_KEY))) as api:
        first = (
            await api.post(
                "/v1/responses",
                json={"model": "fake-model", "instructions": "Be brief.", "input": "weather?", "tools": [WEATHER]},
            )
        ).json()
        [call] = first["output"]
        output = {"type": "function_call_output", "call_id": call["call_id"], "output": '{"temp_c": 18}'}
        second = (
            await api.post(
                "/v1/responses", json={"model": "fake-model", "input": [output], "previous_response_id": first["id"]}
            )
        ).json()
        url = f"/v1/responses/{second['id']}/input_items"
        listed = (await api.get(url, params={"order": "asc"})).json()
        assert [(item["type"], item.get("role")) for item in listed["data"]] == [
            ("message", "system"),
            ("message", "user"),
            ("function_call", None),
            ("function_call_output", None),
        ]
        system, user, called, answered = listed["data"]
        assert system["content"] == [{"type": "input_text", "text": "Be brief."}]
        assert user["content"] == [{"type": "input_text", "text": "weather?"}] and user["status"] == "completed"
        assert {k: called[k] for k in ("call_id", "name", "arguments")} == {
            k: call[k] for k in ("call_id", "name", "arguments")
        }
        assert {k: answered[k] for k in ("call_id", "output")} == {
            "call_id": call["call_id"],
            "output": '{"temp_c": 18}',
        }
        ids = [item["id"] for item in listed["data"]]
        assert len(set(ids)) == 4 and [i.split("_")[0] for i in ids] == ["msg", "msg", "fc", "fco"]
        assert listed["first_id"] == ids[0] and listed["last_id"] == ids[-1] and listed["has_more"] is False
        newest = (await api.get(url)).json()
        assert [item["id"] for item in newest["data"]] == ids[::-1]  # default: desc, and the same ids again
        page = (await api.get(url, params={"limit": 2, "after": ids[-1]})).json()
        assert [item["id"] for item in page["data"]] == ids[-2:-4:-1] and page["has_more"] is True
        last = (await api.get(url, params={"limit": 2, "after": page["last_id"]})).json()
        assert [item["id"] for item in last["data"]] == ids[:1] and last["has_more"] is False
        assert (await api.get(url, headers={"Authorization": f"Bearer {OTHER_KEY}"})).status_code == 404
        assert (await api.get(f"/v1/responses/{uuid.uuid4()}/input_items")).status_code == 404


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"limit": 0}, "limit must be an integer between 1 and 100, got '0'."),
        ({"limit": 101}, "limit must be"),
        ({"limit": "ten"}, "limit must be"),
        ({"order": "newest"}, "order must be asc or desc, got 'newest'."),
        ({"after": "msg_nope"}, "has no input item 'msg_nope'"),
    ],
)
async def test_input_items_bad_queries_are_400_in_xai_format(
    api: httpx.AsyncClient, params: dict[str, Any], needle: str
) -> None:
    created = (await api.post("/v1/responses", json={"model": "fake-model", "input": "hi"})).json()
    r = await api.get(f"/v1/responses/{created['id']}/input_items", params=params)
    assert r.status_code == 400 and r.json()["code"] == INVALID and needle in r.json()["error"], r.text
