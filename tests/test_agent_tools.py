"""The real executors of server-side tools: the bubblewrap sandbox (escape attempts included), a real MCP
server (the `mcp` package's own, and hostile ones) and web search against a local SearXNG-shaped server;
then each through the real server with the real model, from `openai` and `xai-sdk` (the first call forced:
the base model rarely chooses a tool by itself)."""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from openai import OpenAI
from xai_sdk import Client
from xai_sdk.chat import user
from xai_sdk.tools import code_execution, mcp

from localxai.agent.base import Session
from localxai.agent.remote_mcp import RemoteMcp
from localxai.agent.sandbox import CodeSandbox, SandboxLimits
from localxai.agent.web_search import SearxngSearch
from localxai.chat import ServerTool, ToolCall
from localxai.errors import InvalidArgument
from localxai.media.fetch import FetchPolicy

from conftest import API_KEY, Server, free_port, mcp_server, start_server, stop_server

MODEL = "gemma-3-270m"


def call(name: str, **args: Any) -> ToolCall:
    return ToolCall("call_1", name, json.dumps(args))


# -- the sandbox ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sandbox() -> CodeSandbox:
    box = CodeSandbox(SandboxLimits(timeout_s=5, cpu_s=20, memory_bytes=512 * 1024 * 1024, output_chars=2000))
    asyncio.run(box.start())
    assert box.unavailable() is None
    return box


def run_code(sandbox: CodeSandbox, *codes: str) -> list[Any]:
    async def go() -> list[Any]:
        session = Session(None)
        toolset = await sandbox.open(ServerTool("code_execution"), session)
        try:
            return [await toolset.run(call("code_execution", code=code)) for code in codes]
        finally:
            await session.exits.aclose()

    return asyncio.run(go())


def test_code_runs_and_keeps_its_state_within_a_response(sandbox: CodeSandbox) -> None:
    first, second, third = run_code(sandbox, "x = 6\nprint('hello')", "x * 7", "open('f', 'w').write('kept'); 1")
    assert first.output == "hello\n" and second.output == "42\n" and third.error is None
    [fresh] = run_code(sandbox, "x")  # another response: a fresh interpreter
    assert "NameError" in fresh.output and fresh.error is None  # the code's own error is a completed call


def test_escape_attempts_fail(sandbox: CodeSandbox, tmp_path: Path) -> None:
    secret = tmp_path / "keys.db"
    secret.write_text("the data dir")
    os.environ["LOCALXAI_SANDBOX_CANARY"] = "server-secret"
    try:
        results = run_code(
            sandbox,
            "import socket\ntry:\n    socket.create_connection(('127.0.0.1', 5432), timeout=2); print('connected')\n"
            "except OSError as e:\n    print('no network', e.errno)",
            f"import os\nprint(os.path.exists({str(secret)!r}), os.path.exists('/root'),"
            " os.path.exists('/etc/passwd'))",
            "print(open('/proc/1/environ').read()); import os; print(dict(os.environ))",
            "try:\n    open('/usr/evil', 'w')\nexcept OSError as e:\n    print('refused', e.errno)",
            "import os\nprint(os.getuid())",
        )
    finally:
        del os.environ["LOCALXAI_SANDBOX_CANARY"]
    network, files, environ, write, uid = (r.output for r in results)
    assert network.startswith("no network") and "connected" not in network
    assert files == "False False False\n"
    assert "server-secret" not in environ and "LOCALXAI" not in environ
    assert write.startswith("refused")
    assert uid.strip() != "0"


def test_bombs_and_loops_are_stopped_and_the_next_call_works(sandbox: CodeSandbox) -> None:
    fork, memory, after_fork, loop, after_loop, flood = run_code(
        sandbox,
        "import os\nfor _ in range(10000):\n    os.fork()",
        "b = bytearray(4 * 1024 ** 3)",
        "print('still here')",
        "while True: pass",
        "print('fresh')",
        "print('y' * 100000)",
    )
    assert "BlockingIOError" in fork.output or "Resource temporarily unavailable" in fork.output
    assert "MemoryError" in memory.output
    assert after_fork.output == "still here\n"
    assert loop.error == "the code ran longer than 5 s and was stopped"
    assert after_loop.output.endswith("fresh\n") and "fresh interpreter" in after_loop.output
    assert flood.output.startswith("y" * 2000) and "[output truncated: 98001 more bytes]" in flood.output
    # A process a call leaves behind ends with that call: it never writes into the next call's output.
    _, later = run_code(
        sandbox,
        "import os, time\nif os.fork() == 0:\n    time.sleep(1)\n    print('left behind', flush=True)\n    os._exit(0)",
        "import time\ntime.sleep(2)\nprint('next')",
    )
    assert later.output == "next\n"


def test_without_bubblewrap_the_tool_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    box = CodeSandbox()
    asyncio.run(box.start())
    assert "bubblewrap" in (box.unavailable() or "") and "apt install bubblewrap" in (box.unavailable() or "")


# -- MCP --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["streamable", "sse"])
def mcp_url(request: pytest.FixtureRequest) -> Iterator[str]:
    with mcp_server(request.param) as url:
        yield url


@pytest.fixture(scope="module")
def garbage_url() -> Iterator[str]:
    with mcp_server("garbage") as url:
        yield url


def open_mcp(url: str, allow_private: bool = True, **settings: Any) -> Any:
    async def go() -> Any:
        session = Session(None)
        executor = RemoteMcp(FetchPolicy(allow_private=allow_private, timeout_s=10))
        tool = ServerTool("mcp", json.dumps({"server_url": url, "server_label": "test", **settings}))
        return await executor.open(tool, session), session

    return asyncio.run(go())


def test_mcp_tools_are_listed_and_called(mcp_url: str) -> None:
    async def go() -> None:
        session = Session(None)
        executor = RemoteMcp(FetchPolicy(allow_private=True, timeout_s=10))
        tool = ServerTool("mcp", json.dumps({"server_url": mcp_url, "server_label": "test",
                                             "allowed_tools": ["add", "broken", "huge"]}))  # fmt: skip
        toolset = await executor.open(tool, session)
        try:
            assert sorted(f.name for f in toolset.functions) == ["add", "broken", "huge"]
            added = await toolset.run(call("add", a=2, b=3))
            assert added.output == "5" and added.error is None
            broken = await toolset.run(call("broken"))
            assert broken.error is not None and "broken" in broken.error
            huge = await toolset.run(call("huge"))  # 8 MB in one event: past the cap, a failed call
            assert huge.error is not None
        finally:
            await session.exits.aclose()

    asyncio.run(go())


def test_mcp_targets_on_private_addresses_are_refused_by_default(mcp_url: str) -> None:
    with pytest.raises(InvalidArgument, match="private, loopback"):
        open_mcp(mcp_url, allow_private=False)


def test_a_server_that_does_not_speak_mcp_is_a_clear_error(garbage_url: str) -> None:
    with pytest.raises(InvalidArgument, match="MCP server test: it did not speak MCP"):
        open_mcp(garbage_url)


def test_nothing_listening_is_a_clear_error() -> None:
    with pytest.raises(InvalidArgument, match="MCP server test: cannot connect"):
        open_mcp(f"http://127.0.0.1:{free_port()}/mcp")


# -- web search -------------------------------------------------------------------------------------

ARTICLE = (
    "<html><head><title>Otters</title></head><body><nav>Home | About</nav><article><h1>Sea otters</h1>"
    "<p>Sea otters hold hands while they sleep so that they do not drift apart. They live in the North "
    "Pacific and eat sea urchins, clams and crabs.</p></article></body></html>"
)


class Searx(BaseHTTPRequestHandler):
    """SearXNG's JSON API and the pages it finds."""

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        base = f"http://127.0.0.1:{self.server.server_address[1]}"
        if parts.path == "/search":
            query = parse_qs(parts.query)
            assert query["format"] == ["json"]
            results = [
                {"url": f"{base}/otters", "title": "Sea otters", "content": "Otters hold hands."},
                {"url": "http://blocked.test/otters", "title": "Elsewhere", "content": "A copy."},
            ]
            self._send(json.dumps({"query": query["q"][0], "results": results}).encode(), "application/json")
        elif parts.path == "/otters":
            self._send(ARTICLE.encode(), "text/html; charset=utf-8")
        else:
            self.send_error(404)

    def _send(self, body: bytes, kind: str) -> None:
        self.send_response(200)
        self.send_header("content-type", kind)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def searx() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Searx)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def web(searx: str, allow_private: bool = True, **settings: Any) -> Any:
    search = SearxngSearch(searx, FetchPolicy(allow_private=allow_private, timeout_s=5))
    return asyncio.run(search.open(ServerTool("web_search", json.dumps(settings)), Session(None)))


def test_search_and_browse(searx: str) -> None:
    toolset = web(searx)
    found = asyncio.run(toolset.run(call("web_search", query="otters")))
    assert f"URL: {searx}/otters" in found.output and found.sources == (f"{searx}/otters", "http://blocked.test/otters")
    page = asyncio.run(toolset.run(call("browse_page", url=f"{searx}/otters")))
    assert "hold hands while they sleep" in page.output and "Home | About" not in page.output
    assert page.sources == (f"{searx}/otters",)


def test_domain_filters_hold_for_results_and_pages(searx: str) -> None:
    toolset = web(searx, excluded_domains=["blocked.test"])
    found = asyncio.run(toolset.run(call("web_search", query="otters")))
    assert found.sources == (f"{searx}/otters",)
    only = web(searx, allowed_domains=["blocked.test"])
    refused = asyncio.run(only.run(call("browse_page", url=f"{searx}/otters")))
    assert refused.error is not None and "outside the domains" in refused.error


def test_pages_on_private_addresses_are_not_fetched_by_default(searx: str) -> None:
    toolset = web(searx, allow_private=False)
    page = asyncio.run(toolset.run(call("browse_page", url=f"{searx}/otters")))
    assert page.error is not None and "private, loopback" in page.error


def test_without_external_web_access_only_search_is_offered(searx: str) -> None:
    assert [f.name for f in web(searx, external_web_access=False).functions] == ["web_search"]


# -- through the real server and the real model -----------------------------------------------------


@pytest.fixture(scope="module")
def agent_server(searx: str) -> Iterator[Server]:
    server = start_server(Path(tempfile.mkdtemp()), "--api-key", API_KEY, "--tool-allow-private",
                          "--web-search-url", searx, "--parallel", "2")  # fmt: skip
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture(scope="module")
def streamable_mcp() -> Iterator[str]:
    with mcp_server("streamable") as url:
        yield url


def test_openai_responses_run_a_sandboxed_code_execution(agent_server: Server) -> None:
    client = OpenAI(base_url=agent_server.v1, api_key=API_KEY)
    response = client.responses.create(
        model=MODEL, input="Compute 6 times 7 with Python.", max_output_tokens=64, temperature=0,
        tools=[{"type": "code_interpreter", "container": {"type": "auto"}}], tool_choice="required",
        include=["code_interpreter_call.outputs"],
    )  # fmt: skip
    call_item = response.output[0]
    assert call_item.type == "code_interpreter_call" and call_item.status == "completed"
    assert call_item.outputs is not None and call_item.outputs[0].type == "logs"
    assert response.output[-1].type == "message"
    ran = [o for o in response.output if o.type == "code_interpreter_call" and o.status == "completed"]
    assert response.usage is not None and response.usage.model_extra["num_server_side_tools_used"] == len(ran)


def test_openai_responses_call_a_real_mcp_server(agent_server: Server, streamable_mcp: str) -> None:
    client = OpenAI(base_url=agent_server.v1, api_key=API_KEY)
    tool = {"type": "mcp", "server_label": "calc", "server_url": streamable_mcp, "allowed_tools": ["add"],
            "require_approval": "never"}  # fmt: skip
    response = client.responses.create(model=MODEL, input="Add 2 and 3.", tools=[tool], tool_choice="required",
                                       max_output_tokens=64, temperature=0)  # fmt: skip
    item = response.output[0]
    assert item.type == "mcp_call" and item.name == "add" and item.server_label == "calc"
    args = json.loads(item.arguments)
    assert item.output == str(args["a"] + args["b"])
    # Streamed: the MCP session is opened by the request's handler and closed by the task that streams the
    # answer; it must end with the final event, not a cut connection (an anyio cancel scope left by the wrong task).
    final = None
    with client.responses.stream(model=MODEL, input="Add 2 and 3.", tools=[tool], tool_choice="required",
                                 max_output_tokens=64, temperature=0) as stream:  # fmt: skip
        for event in stream:
            if event.type in ("response.completed", "response.incomplete"):
                final = event.response
    assert final is not None and final.output[0].type == "mcp_call"
    assert "Exception in ASGI application" not in agent_server.log.read_text()


def test_openai_responses_stream_a_web_search(agent_server: Server, searx: str) -> None:
    client = OpenAI(base_url=agent_server.v1, api_key=API_KEY)
    kinds, final = [], None
    with client.responses.stream(model=MODEL, input="What do sea otters do when they sleep?",
                                 tools=[{"type": "web_search"}], tool_choice="required", max_output_tokens=48,
                                 temperature=0) as stream:  # fmt: skip
        for event in stream:
            kinds.append(event.type)
            if event.type in ("response.completed", "response.incomplete"):  # the budget may end it
                final = event.response
    assert final is not None
    assert "response.web_search_call.in_progress" in kinds and "response.web_search_call.completed" in kinds
    item = final.output[0]
    assert item.type == "web_search_call" and item.status == "completed"
    message = final.output[-1]
    assert message.type == "message"
    urls = [a.url for a in message.content[0].annotations]
    assert urls and all(u.startswith(searx) or u.startswith("http://blocked.test") for u in urls)


def test_xai_sdk_runs_code_execution_and_mcp(agent_server: Server, streamable_mcp: str) -> None:
    client = Client(api_key=API_KEY, api_host=f"localhost:{agent_server.grpc_port}")
    chat = client.chat.create(model=MODEL, tools=[code_execution()], tool_choice="required", max_tokens=64,
                              temperature=0, include=["code_execution_call_output"])  # fmt: skip
    chat.append(user("Print the sum of 2 and 3 with Python."))
    response = chat.sample()
    ran = [c for c in response.tool_calls if c.status == 1]  # COMPLETED
    assert ran and response.server_side_tool_usage == {"SERVER_SIDE_TOOL_CODE_EXECUTION": len(ran)}
    assert response.tool_calls[0].function.name == "code_execution"
    assert len(response.tool_outputs) == len(response.tool_calls)
    chat = client.chat.create(model=MODEL, tools=[mcp(streamable_mcp, server_label="calc",
                              allowed_tool_names=["add"])], tool_choice="required", max_tokens=48,
                              temperature=0)  # fmt: skip
    chat.append(user("Add 2 and 3."))
    streamed = None
    for streamed, _chunk in chat.stream():  # noqa: B007 - the last one is the whole response
        pass
    assert streamed is not None and streamed.tool_calls[0].function.name == "add"
    assert streamed.server_side_tool_usage == {"SERVER_SIDE_TOOL_MCP": len(streamed.tool_calls)}
