"""The agent loop's logic on the fake engine and a scripted executor, through both real wires: several
turns, parallel calls, mixed client and server tools, max_turns, failures, cancellation, continuation,
the REST items and events and what xai-sdk reads over gRPC. (The real executors: test_agent_tools.py.)"""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_responses import events
from xai_sdk import AsyncClient
from xai_sdk.chat import tool, user
from xai_sdk.tools import code_execution, web_search

from localxai.agent.base import Outcome, Session, arguments
from localxai.agent.loop import AgentLimits
from localxai.chat import ChatRequest, Role, ServerTool, Tool, ToolCall
from localxai.engines.fake import FakeEngine
from localxai.grpcapi.server import grpc_server
from localxai.httpapi.app import create_app
from localxai.runtime import Options, Runtime
from localxai.store.store import Store, sqlite_url

from conftest import API_KEY, app_client, free_port

CODE = [{"type": "code_interpreter", "container": {"type": "auto"}}]
WEATHER = {"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}}


def calls(*codes: str) -> str:
    return json.dumps({"tool_calls": [{"name": "code_execution", "arguments": {"code": c}} for c in codes]})


@dataclass
class Scripted:
    """A code_execution executor whose calls answer `ran: <code>`; `delay` holds each call; `broken`
    codes raise; `running` / `most` / `cancelled` count what happened."""

    delay: float = 0.0
    kinds: tuple[str, ...] = ("code_execution",)
    running: int = 0
    most: int = 0
    cancelled: int = 0
    seen: list[str] = field(default_factory=list)

    async def start(self) -> None:
        pass

    def unavailable(self) -> str | None:
        return None

    async def open(self, tool: ServerTool, session: Session) -> Any:
        return _Toolset(self)


class _Toolset:
    kind = "code_execution"
    label = None
    functions = (
        Tool("code_execution", "Run Python", '{"type": "object", "properties": {"code": {"type": "string"}}}'),
    )

    def __init__(self, owner: Scripted) -> None:
        self.owner = owner

    async def run(self, call: ToolCall) -> Outcome:
        code = arguments(call)["code"]
        owner = self.owner
        owner.seen.append(code)
        owner.running += 1
        owner.most = max(owner.most, owner.running)
        try:
            if owner.delay:
                await asyncio.sleep(owner.delay)
            if code == "boom":
                raise RuntimeError("a secret internal detail")
            if code == "hang":
                await asyncio.sleep(3600)
            if code.startswith("read "):  # a call that read a page: the answer's source
                return Outcome(f"ran: {code}", sources=(code.removeprefix("read "),))
            return Outcome(f"ran: {code}")
        except asyncio.CancelledError:
            owner.cancelled += 1
            raise
        finally:
            owner.running -= 1


def script(*turns: str):  # type: ignore[no-untyped-def]
    """The reply to each model turn in order, by how many turns with calls follow the last user message."""

    def reply(request: ChatRequest) -> str:
        last = max(i for i, m in enumerate(request.messages) if m.role is Role.USER)
        done = sum(1 for m in request.messages[last:] if m.role is Role.ASSISTANT and m.tool_calls)
        return turns[min(done, len(turns) - 1)]

    return reply


class Recording(FakeEngine):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.requests: list[ChatRequest] = []

    async def generate(self, request: Any) -> Any:
        self.requests.append(request.chat)
        return await super().generate(request)


def runtime_for(engine: FakeEngine, executor: Scripted, **limits: Any) -> Runtime:
    store = Store(sqlite_url(Path(tempfile.mkdtemp(prefix="localxai-test-"))))
    options = Options(executors=(executor,), agent_limits=AgentLimits(**limits))
    return Runtime.build([engine], (API_KEY,), store, options)


@asynccontextmanager
async def rest(engine: FakeEngine, executor: Scripted, **limits: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(create_app(runtime_for(engine, executor, **limits))) as c:
        yield c


def ask(**extra: Any) -> dict[str, Any]:
    return {"model": "fake-model", "input": "compute", "tools": CODE, "tool_choice": "required", **extra}


async def test_one_call_then_the_answer() -> None:
    engine = Recording(reply=script(calls("print(1)"), "the answer is one"))
    async with rest(engine, Scripted()) as api:
        body = (await api.post("/v1/responses", json=ask())).json()
    assert body["status"] == "completed"
    call, message = body["output"]
    assert call["type"] == "code_interpreter_call" and call["name"] == "code_execution"
    assert call["status"] == "completed" and call["call_id"] == "" and call["code"] == "print(1)"
    assert json.loads(call["arguments"]) == {"code": "print(1)"}
    assert call["outputs"] is None  # not asked for (include)
    assert message["type"] == "message" and message["content"][0]["text"] == "the answer is one"
    usage = body["usage"]
    assert usage["num_server_side_tools_used"] == 1
    assert usage["server_side_tool_usage_details"]["code_interpreter_calls"] == 1
    # the second turn read the call and its result; it was not forced (only the first turn is)
    second = engine.requests[1]
    assert [m.role for m in second.messages[-2:]] == [Role.ASSISTANT, Role.TOOL]
    assert second.messages[-1].text == "ran: print(1)"
    assert second.tool_choice is not None and second.tool_choice.mode.value == "auto"
    assert usage["input_tokens"] == sum(len(" ".join(f"{m.role.value}: {m.text}" for m in r.messages).split())
                                        for r in engine.requests)  # fmt: skip


async def test_include_shows_the_outputs() -> None:
    engine = FakeEngine(reply=script(calls("print(1)"), "done"))
    async with rest(engine, Scripted()) as api:
        body = (await api.post("/v1/responses", json=ask(include=["code_interpreter_call.outputs"]))).json()
    assert body["output"][0]["outputs"] == [{"type": "logs", "logs": "ran: print(1)"}]


async def test_parallel_calls_run_together() -> None:
    executor = Scripted(delay=0.2)
    engine = FakeEngine(reply=script(calls("a", "b", "c"), "done"))
    async with rest(engine, executor) as api:
        body = (await api.post("/v1/responses", json=ask())).json()
    assert [o["type"] for o in body["output"]] == ["code_interpreter_call"] * 3 + ["message"]
    assert executor.most == 3
    assert body["usage"]["num_server_side_tools_used"] == 3


async def test_several_turns_and_the_stream_matches_the_stored_response() -> None:
    engine = FakeEngine(reply=script(calls("one"), calls("two"), "all done"))
    async with rest(engine, Scripted()) as api:
        r = await api.post("/v1/responses", json=ask(stream=True))
        stream = events(r.text)
        stored = (await api.get(f"/v1/responses/{stream[0]['response']['id']}")).json()
    assert [e["sequence_number"] for e in stream] == list(range(len(stream)))
    kinds = [e["type"] for e in stream]
    for expected in ("response.code_interpreter_call.in_progress", "response.code_interpreter_call_code.delta",
                     "response.code_interpreter_call_code.done", "response.code_interpreter_call.interpreting",
                     "response.code_interpreter_call.completed"):  # fmt: skip
        assert kinds.count(expected) == 2, expected
    final = stream[-1]["response"]
    assert stream[-1]["type"] == "response.completed"
    assert final["output"] == stored["output"]
    assert [o["type"] for o in final["output"]] == ["code_interpreter_call", "code_interpreter_call", "message"]
    done = [e["item"] for e in stream if e["type"] == "response.output_item.done"]
    assert done == final["output"]
    for e in stream:
        if "output_index" in e and "item_id" in e:
            assert final["output"][e["output_index"]]["id"] == e["item_id"]


async def test_max_turns_ends_incomplete() -> None:
    engine = FakeEngine(reply=calls("again"))  # the model never stops calling
    async with rest(engine, Scripted(), max_turns=3) as api:
        body = (await api.post("/v1/responses", json=ask(max_turns=2))).json()
        capped = (await api.post("/v1/responses", json=ask(max_turns=50))).json()
    assert body["status"] == "incomplete" and body["incomplete_details"] == {"reason": "max_turns"}
    assert [o["type"] for o in body["output"]].count("code_interpreter_call") == 2
    assert [o["type"] for o in capped["output"]].count("code_interpreter_call") == 3  # the server's cap


async def test_failures_are_failed_calls_the_model_reads() -> None:
    engine = Recording(reply=script(calls("boom", "hang"), "sorry"))
    async with rest(engine, Scripted(), call_timeout_s=0.3) as api:
        body = (await api.post("/v1/responses", json=ask())).json()
    boom, hang, message = body["output"]
    assert boom["status"] == hang["status"] == "failed"
    assert boom["error"] == "code_execution failed inside the server" and "secret" not in json.dumps(body)
    assert hang["error"] == "code_execution did not finish within 0.3 s"
    assert message["content"][0]["text"] == "sorry"
    results = [m.text for m in engine.requests[1].messages if m.role is Role.TOOL]
    assert results == [
        "Error: code_execution failed inside the server",
        "Error: code_execution did not finish within 0.3 s",
    ]
    assert body["usage"]["num_server_side_tools_used"] == 0  # only successful calls count


async def test_a_client_function_ends_the_loop_and_the_conversation_goes_on() -> None:
    both = json.dumps({"tool_calls": [{"name": "code_execution", "arguments": {"code": "x"}},
                                      {"name": "get_weather", "arguments": {}}]})  # fmt: skip
    engine = Recording(reply=script(both, "it is sunny"))
    async with rest(engine, Scripted()) as api:
        first = (await api.post("/v1/responses", json=ask(tools=[*CODE, WEATHER]))).json()
        assert [o["type"] for o in first["output"]] == ["code_interpreter_call", "function_call"]
        fc = first["output"][1]
        assert first["status"] == "completed" and fc["name"] == "get_weather"
        body = {"model": "fake-model", "previous_response_id": first["id"], "tools": [*CODE, WEATHER],
                "input": [{"type": "function_call_output", "call_id": fc["call_id"], "output": "sunny"}]}  # fmt: skip
        second = (await api.post("/v1/responses", json=body)).json()
        items = (await api.get(f"/v1/responses/{second['id']}/input_items?order=asc")).json()["data"]
    assert second["output"][-1]["content"][0]["text"] == "it is sunny"
    context = engine.requests[-1].messages
    assert [m.text for m in context if m.role is Role.TOOL] == ["ran: x", "sunny"]
    assert [i["type"] for i in items] == ["message", "function_call", "function_call_output"]  # server calls left out


async def test_a_client_that_goes_away_stops_the_running_call() -> None:
    executor = Scripted()
    engine = FakeEngine(reply=script(calls("hang"), "never"))
    runtime = runtime_for(engine, executor)
    async with app_client(create_app(runtime)) as api:
        request = asyncio.ensure_future(api.post("/v1/responses", json=ask(stream=True)))
        for _ in range(200):
            if executor.running:
                break
            await asyncio.sleep(0.01)
        assert executor.running == 1
        request.cancel()
        await asyncio.gather(request, return_exceptions=True)
        for _ in range(200):
            if executor.cancelled:
                break
            await asyncio.sleep(0.01)
    assert executor.cancelled == 1 and executor.running == 0


@pytest.mark.parametrize(
    ("tools", "needle"),
    [
        ([{"type": "web_search"}], "--web-search-url"),
        ([{"type": "x_search"}], "X search"),
        ([{"type": "mcp", "server_url": "http://x"}], "--mcp"),
        ([{"type": "code_interpreter", "container": "cntr_1"}], "automatic container"),
        ([{"type": "web_search", "allowed_domains": ["a"], "excluded_domains": ["b"]}], "cannot both"),
        ([{"type": "web_search", "allowed_domains": list("abcdef")}], "at most 5"),
        ([{"type": "web_search", "color": "red"}], "color not supported"),
        ([{"type": "mcp", "server_url": "http://x", "require_approval": "always"}], "require_approval"),
    ],
)
async def test_tools_this_server_cannot_run_are_refused_by_name(tools: list[Any], needle: str) -> None:
    async with rest(FakeEngine(), Scripted()) as api:
        r = await api.post("/v1/responses", json={"model": "fake-model", "input": "hi", "tools": tools})
    assert r.status_code == 400 and needle in r.json()["error"], r.text


async def test_two_tools_of_one_name_are_refused() -> None:
    clash = {"type": "function", "name": "code_execution", "parameters": {"type": "object", "properties": {}}}
    async with rest(FakeEngine(), Scripted()) as api:
        r = await api.post("/v1/responses", json={"model": "fake-model", "input": "hi", "tools": [*CODE, clash]})
    assert r.status_code == 400 and "Two tools are named 'code_execution'" in r.json()["error"]


PAGE = "https://example.org/otters"
CITING = f"Otters hold hands ({PAGE}), see {PAGE}/ too."


async def test_sources_are_annotated_where_the_answer_names_them() -> None:
    engine = FakeEngine(reply=script(calls(f"read {PAGE}", "read https://example.org/other"), CITING))
    async with rest(engine, Scripted()) as api:
        body = (await api.post("/v1/responses", json=ask())).json()
        streamed = (await api.post("/v1/responses", json=ask(stream=True))).text
    notes = body["output"][-1]["content"][0]["annotations"]
    spans = [(a["url"], a["start_index"], a["end_index"]) for a in notes]
    first, second = CITING.index(PAGE), CITING.rindex(PAGE)
    assert spans == [
        (PAGE, first, first + len(PAGE)),
        (PAGE, second, second + len(PAGE)),
        ("https://example.org/other", 0, 0),
    ]  # fmt: skip  (not named in the text: no position)
    added = [json.loads(line[6:])["annotation"] for line in streamed.splitlines()
             if line.startswith("data: ") and '"response.output_text.annotation.added"' in line]  # fmt: skip
    assert added == notes


# -- gRPC, through xai-sdk ----------------------------------------------------------------------------


@asynccontextmanager
async def sdk(engine: FakeEngine, executor: Scripted) -> AsyncIterator[AsyncClient]:
    runtime = runtime_for(engine, executor)
    port = free_port()
    async with grpc_server(runtime, "127.0.0.1", port):
        yield AsyncClient(api_key=API_KEY, api_host=f"localhost:{port}")


async def test_xai_sdk_sample_reads_the_loop() -> None:
    engine = FakeEngine(reply=script(calls("print(2)"), "two"))
    async with sdk(engine, Scripted()) as client:
        chat = client.chat.create(model="fake-model", tools=[code_execution()], tool_choice="required",
                                  include=["code_execution_call_output"])  # fmt: skip
        chat.append(user("compute"))
        response = await chat.sample()
        assert response.content == "two"
        [call] = response.tool_calls
        assert call.function.name == "code_execution" and call.type == 4  # TOOL_CALL_TYPE_CODE_EXECUTION_TOOL
        assert call.status == 1  # COMPLETED
        assert [o.message.content for o in response.tool_outputs] == ["ran: print(2)"]
        assert response.server_side_tool_usage == {"SERVER_SIDE_TOOL_CODE_EXECUTION": 1}
        assert response.finish_reason == "REASON_STOP"
        # the SDK appends every output; the next turn goes on from them
        chat.append(response)
        chat.append(user("again"))
        again = await chat.sample()
        assert again.content == "two"


async def test_xai_sdk_inline_citations_only_when_included() -> None:
    engine = FakeEngine(reply=script(calls(f"read {PAGE}"), CITING))
    async with sdk(engine, Scripted()) as client:
        for include in ([], ["inline_citations"]):
            chat = client.chat.create(model="fake-model", tools=[code_execution()], tool_choice="required",
                                      include=include)  # fmt: skip
            chat.append(user("otters?"))
            sampled = await chat.sample()
            streamed = None
            async for streamed, _chunk in chat.stream():  # noqa: B007 - the last one is the whole response
                pass
            assert streamed is not None
            for response in (sampled, streamed):
                assert list(response.citations) == [PAGE]
                spans = [(c.id, c.start_index, c.end_index, c.web_citation.url) for c in response.inline_citations]
                if not include:
                    assert spans == []
                    continue
                start = CITING.index(PAGE)
                assert spans[0] == ("1", start, start + len(PAGE), PAGE) and spans[1][0] == "2"
                assert response.content[spans[0][1] : spans[0][2]] == PAGE


async def test_xai_sdk_stream_reads_the_loop() -> None:
    engine = FakeEngine(reply=script(calls("a", "b"), "both ran"))
    async with sdk(engine, Scripted()) as client:
        chat = client.chat.create(model="fake-model", tools=[code_execution()], tool_choice="required")
        chat.append(user("compute"))
        texts, seen_calls = [], []
        response = None
        async for response, chunk in chat.stream():  # noqa: B007 - the last one is the whole response
            texts.append(chunk.content)
            seen_calls += chunk.tool_calls
        assert response is not None and response.content == "both ran" and "".join(texts) == "both ran"
        assert sorted(c.function.name for c in response.tool_calls) == ["code_execution"] * 2
        assert len(seen_calls) == 2 and all(c.status == 1 for c in seen_calls)
        assert response.tool_outputs == []  # not included
        assert response.server_side_tool_usage == {"SERVER_SIDE_TOOL_CODE_EXECUTION": 2}
        assert response.finish_reason == "REASON_STOP"


async def test_xai_sdk_refusal_names_the_tool() -> None:
    import grpc

    async with sdk(FakeEngine(), Scripted()) as client:
        chat = client.chat.create(model="fake-model", tools=[web_search()])
        chat.append(user("news?"))
        with pytest.raises(grpc.RpcError) as info:
            await chat.sample()
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "--web-search-url" in (info.value.details() or "")


async def test_xai_sdk_mixed_client_and_server_tools() -> None:
    both = json.dumps({"tool_calls": [{"name": "code_execution", "arguments": {"code": "x"}},
                                      {"name": "get_weather", "arguments": {}}]})  # fmt: skip
    engine = FakeEngine(reply=script(both, "sunny"))
    weather = tool("get_weather", "the weather", {"type": "object", "properties": {}})
    async with sdk(engine, Scripted()) as client:
        chat = client.chat.create(model="fake-model", tools=[code_execution(), weather], tool_choice="required")
        chat.append(user("weather?"))
        response = await chat.sample()
        types = sorted(c.type for c in response.tool_calls)
        assert types == [1, 4]  # CLIENT_SIDE_TOOL, CODE_EXECUTION_TOOL
        assert response.finish_reason == "REASON_TOOL_CALLS"


async def test_a_key_may_be_denied_server_side_tools_and_calls_are_counted() -> None:
    engine = FakeEngine(reply=script(calls("print(1)"), "done"))
    runtime = runtime_for(engine, Scripted())
    _, no_code = runtime.store.create_key("no code", tools=("mcp",))
    record, every = runtime.store.create_key("every tool")
    async with app_client(create_app(runtime)) as api:
        denied = await api.post("/v1/responses", json=ask(), headers={"Authorization": f"Bearer {no_code}"})
        allowed = await api.post("/v1/responses", json=ask(), headers={"Authorization": f"Bearer {every}"})
        metrics = (await api.get("/metrics")).text
    assert denied.status_code == 403
    assert "may not use the server-side tool 'code_execution'" in denied.json()["error"]
    assert allowed.status_code == 200
    assert 'localxai_server_tool_calls_total{status="completed",tool="code_execution"} 1.0' in metrics
    # The ledger: each model turn is a request of its own (counted against the key's limits), plus the calls.
    (ledger,) = runtime.store.usage_summary(key_id=record.id)
    assert (ledger.requests, ledger.server_tool_calls) == (2, 1) and ledger.completion_tokens > 0
