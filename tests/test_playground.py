"""The web playground at `/`, in a real browser (Playwright driving Debian's chromium) against a real server
process: the default model and the tiny vision fixture, with an API key configured.

One server and one page for the module; the tests run in file order on that page (the first one enters the
key). The "Show code" output is run, as pasted, with the venv's python against the same server.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from localxai.engines.fake import FakeEngine

from conftest import API_KEY, AUTH, Server, app_client, fake_app, mcp_server, start_server, stop_server

CHROMIUM = Path(os.environ.get("LOCALXAI_CHROMIUM", "/usr/bin/chromium"))
VISION = Path(__file__).parent / "fixtures" / "tiny-vision"
TIMEOUT_MS = 90_000


def models_toml(tmp: Path) -> Path:
    path = tmp / "models.toml"
    path.write_text(
        '[[models]]\nid = "gemma-3-270m"\nctx_size = 2048\nparallel = 2\nreasoning_efforts = ["low", "high"]\n\n'
        f'[[models]]\nid = "tiny-vision"\npath = "{VISION / "model.gguf"}"\nmmproj = "{VISION / "mmproj.gguf"}"\n'
        "ctx_size = 1024\nparallel = 1\n"
    )
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("playground")
    # Private addresses allowed for server-side tools: the test's MCP server listens on loopback.
    started = start_server(tmp, "--config", str(models_toml(tmp)), "--api-key", API_KEY, "--tool-allow-private")
    yield started
    stop_server(started)


@pytest.fixture(scope="module")
def chromium() -> Path:
    """Debian's chromium (Playwright's own browser download is not reachable): skipped without it, but not in CI."""
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium) for the browser tests"
        if os.environ.get("CI"):
            pytest.fail(reason + " (.ci/run installs it)")
        pytest.skip(reason)
    return CHROMIUM


@pytest.fixture(scope="module")
def page(chromium: Path, server: Server) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        problems: list[str] = []
        page.on("pageerror", lambda exc: problems.append(str(exc)))
        page.on("console", lambda m: problems.append(m.text) if "Content Security Policy" in m.text else None)
        page.goto(server.base_url + "/")
        page.wait_for_selector("body[data-ready=true]")
        yield page
        assert not problems, problems  # no script error and nothing the CSP blocked, in any test
        browser.close()


def new_chat(page: Any, model: str = "gemma-3-270m", max_tokens: str = "16") -> None:
    page.click("#new-chat")
    page.select_option("#model", model)
    page.fill("#max-tokens", max_tokens)
    page.dispatch_event("#max-tokens", "change")


def last_answer(page: Any) -> Any:
    return page.locator(".msg.assistant").last


def stat(page: Any, name: str) -> str:
    return str(last_answer(page).locator(f".stat[data-stat={name}]").get_attribute("data-value"))


def png(color: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 24), color).save(out, format="PNG")
    return out.getvalue()


async def test_the_page_and_its_assets_are_public_with_a_strict_csp_and_the_api_is_not() -> None:
    async with app_client(fake_app(), headers={}) as c:
        page = await c.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "connect-src 'self'" in csp
        assert "<script" in page.text and "<script>" not in page.text  # no inline script
        script = await c.get("/playground/app.js")
        assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
        assert (await c.get("/playground/style.css")).headers["content-type"].startswith("text/css")
        assert (await c.get("/playground/config.json")).json() == {"key_required": True, "grpc_port": 50051}
        assert (await c.get("/playground/models.json")).status_code == 401
        assert (await c.get("/v1/language-models")).status_code == 401
        listed = (await c.get("/playground/models.json", headers=AUTH)).json()
        assert listed["models"] == [{"id": "fake-model", "reasoning": False, "reasoning_efforts": []}]
        # The server-side tools the page offers, each with why this server cannot run it (None: it can).
        tools = listed["server_tools"]
        assert set(tools) == {"code_execution", "web_search", "mcp"} and "--web-search-url" in tools["web_search"]
    reasoning = FakeEngine(reasoning_efforts=("low", "high"))
    async with app_client(fake_app(reasoning)) as c:
        assert (await c.get("/playground/models.json")).json()["models"][0]["reasoning_efforts"] == ["low", "high"]


async def test_without_keys_the_page_needs_none() -> None:
    async with app_client(fake_app(keys=()), headers={}) as c:
        assert (await c.get("/playground/config.json")).json() == {"key_required": False, "grpc_port": 50051}


def test_asks_for_the_key_and_shows_xais_error_for_a_wrong_one(page: Any) -> None:
    assert page.is_visible("#key-dialog")
    page.fill("#key-input", "xai-wrong-key-000")
    page.click("#key-save")
    page.wait_for_selector("#key-error:not([hidden])")
    assert "Incorrect API key provided: xa***00" in page.inner_text("#key-error")
    assert "Incorrect API key provided" in page.inner_text("#banner")
    page.fill("#key-input", API_KEY)
    page.click("#key-save")
    page.wait_for_selector("#model option[value=tiny-vision]", state="attached")
    assert page.is_hidden("#banner")
    assert page.evaluate("localStorage.getItem('localxai.key')") == API_KEY
    # Only the first model is loaded at start; the picker says which one loads on first use.
    assert option_label(page, "gemma-3-270m") == "gemma-3-270m"
    assert option_label(page, "tiny-vision") == "tiny-vision (not loaded: loads on first use)"


def option_label(page: Any, model: str) -> str:
    return str(page.evaluate("(id) => document.querySelector(`#model option[value='${id}']`).text", model))


def test_a_wrong_key_shows_the_error_on_the_answer(page: Any) -> None:
    new_chat(page)
    page.click("#change-key")  # a key revoked mid-session: the models listed before stay
    page.fill("#key-input", "xai-wrong-key-000")
    page.click("#key-save")
    page.wait_for_selector("#key-error:not([hidden])")
    page.click("#key-cancel")
    page.fill("#input", "Hi")
    page.click("#send")
    error = last_answer(page).locator(".error")
    error.wait_for()
    assert "Incorrect API key provided" in error.inner_text() and "HTTP 400" in error.inner_text()
    assert stat(page, "request-id")  # x-request-id, read from the response headers
    page.fill("#key-input", API_KEY)
    page.click("#key-save")
    page.wait_for_selector("#model option[value=tiny-vision]", state="attached")


def test_a_message_streams_text_and_shows_usage_and_timings(page: Any) -> None:
    new_chat(page, max_tokens="12")
    page.fill("#system", "You are terse.")
    page.fill("#input", "Write a short list of three fruits.")
    page.press("#input", "Enter")
    last_answer(page).locator(".stat[data-stat=completion]").wait_for()
    assert last_answer(page).locator(".content").inner_text().strip()
    assert int(stat(page, "prompt")) > 0 and int(stat(page, "completion")) > 0
    assert stat(page, "cached").isdigit() and stat(page, "reasoning") == "0"
    assert stat(page, "ttft").endswith("ms") and stat(page, "tps").endswith("tok/s")
    assert stat(page, "finish") in ("stop", "length")
    assert len(stat(page, "request-id")) == 32
    # A second turn: the history goes with it, so the prompt is longer.
    first_prompt = int(stat(page, "prompt"))
    page.fill("#input", "And one vegetable.")
    page.click("#send")
    page.locator(".msg.assistant .stat[data-stat=completion]").nth(1).wait_for()
    assert int(stat(page, "prompt")) > first_prompt
    # Regenerate replaces the last answer; the conversation is kept in this browser only.
    before = stat(page, "request-id")
    page.click("#regenerate")
    page.locator(".msg.assistant .stat[data-stat=completion]").nth(1).wait_for()
    assert stat(page, "request-id") != before
    stored = page.evaluate("JSON.parse(localStorage.getItem('localxai.conversations'))")
    assert [m["role"] for m in stored[0]["messages"]] == ["user", "assistant", "user", "assistant"]
    page.fill("#system", "")


def test_stop_cancels_the_stream(page: Any, server: Server) -> None:
    new_chat(page, max_tokens="1500")
    page.fill("#input", "Tell a very long story about a lighthouse keeper.")
    page.click("#send")
    page.locator(".msg.assistant .content p").first.wait_for()  # text has arrived
    assert running(server) == 1
    page.click("#stop")
    page.wait_for_selector("#send:not([hidden])")
    assert stat(page, "finish") == "stopped by you"
    text = last_answer(page).locator(".content").inner_text()
    page.wait_for_timeout(500)
    assert last_answer(page).locator(".content").inner_text() == text  # nothing arrives after stop
    # The server saw the client leave and freed the sequence long before 1500 tokens.
    deadline = time.monotonic() + 15
    while running(server) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not running(server)


def running(server: Server) -> float:
    metrics = httpx.get(server.base_url + "/metrics", headers=AUTH, timeout=10).text
    line = next(m for m in metrics.splitlines() if m.startswith('localxai_running_sequences{model="gemma-3-270m"}'))
    return float(line.rsplit(" ", 1)[1])


def test_images_attach_by_picker_paste_and_drop_on_a_vision_model(page: Any, tmp_path: Path) -> None:
    new_chat(page, model="gemma-3-270m")
    assert page.is_hidden("#attach")  # a text-only model: no image button
    assert page.is_visible("#reasoning-row")
    page.select_option("#model", "tiny-vision")
    page.wait_for_selector("#attach:not([hidden])")
    assert page.is_hidden("#reasoning-row")  # tiny-vision takes no reasoning_effort
    red = tmp_path / "red.png"
    red.write_bytes(png((220, 20, 20)))
    page.set_input_files("#file", str(red))
    page.wait_for_selector(".attachment img")
    for event in ("paste", "drop"):
        page.evaluate(
            """([event, bytes]) => {
                const transfer = new DataTransfer();
                transfer.items.add(new File([new Uint8Array(bytes)], "blue.png", {type: "image/png"}));
                const target = document.getElementById(event === "paste" ? "input" : "main");
                const e = event === "paste"
                    ? new ClipboardEvent("paste", {clipboardData: transfer, bubbles: true, cancelable: true})
                    : new DragEvent("drop", {dataTransfer: transfer, bubbles: true, cancelable: true});
                target.dispatchEvent(e);
            }""",
            [event, list(png((20, 20, 220)))],
        )
    page.locator(".attachment img").nth(2).wait_for()
    page.select_option("#detail", "low")
    page.fill("#input", "What colours are these?")
    page.click("#send")
    last_answer(page).locator(".stat[data-stat=completion]").wait_for()
    assert not last_answer(page).locator(".error").count()
    assert int(stat(page, "image")) > 0
    assert page.locator(".msg.user").last.locator("img").count() == 3
    stored = page.evaluate("JSON.parse(localStorage.getItem('localxai.conversations'))")
    sent = stored[0]["messages"][0]
    assert sent["detail"] == "low" and all(url.startswith("data:image/png;base64,") for url in sent["images"])
    # Its first message loaded it: the picker says so once the answer is in.
    page.wait_for_function("document.querySelector(`#model option[value='tiny-vision']`).text === 'tiny-vision'")


def test_tool_definitions_and_json_schema_output(page: Any) -> None:
    new_chat(page, max_tokens="48")
    page.select_option("#format", "json_schema")
    schema = '{"type": "object", "properties": {"city": {"type": "string", "maxLength": 24}}, "required": ["city"]}'
    page.fill("#schema", schema)  # bounded: the answer fits in max_tokens
    page.fill("#input", "Name a city in France as JSON.")
    page.click("#send")
    last_answer(page).locator(".stat[data-stat=completion]").wait_for()
    answer = last_answer(page).locator(".content code.language-json").inner_text()
    assert isinstance(json.loads(answer)["city"], str)  # shown as JSON
    page.select_option("#format", "text")
    tools = (
        '[{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",'
        ' "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]'
    )
    page.fill("#tools", tools)
    page.select_option("#tool-choice", "required")
    page.fill("#input", "What is the weather in Paris?")
    page.click("#send")
    last_answer(page).locator(".stat[data-stat=completion]").wait_for()
    assert stat(page, "finish") == "tool_calls"
    call = last_answer(page).locator(".tool-call").first  # the model may call it more than once
    assert call.locator("code").inner_text() == "get_weather"
    assert "city" in json.loads(call.locator("pre").inner_text())
    # The user plays the tool: its result goes back as a tool message and the model answers.
    page.select_option("#tool-choice", "none")
    for result in page.locator(".tool-results textarea").all():
        result.fill('{"temperature_c": 21}')
    page.click(".send-tool-results")
    page.locator(".msg.tool").first.wait_for()
    page.locator(".msg.assistant").nth(1).locator(".stat[data-stat=completion]").wait_for()
    assert not last_answer(page).locator(".error").count()
    assert stat(page, "finish") in ("stop", "length")
    page.select_option("#tool-choice", "")
    page.fill("#tools", "not json")
    page.fill("#input", "Hi")
    page.click("#send")
    page.wait_for_selector("#settings-error:not([hidden])")
    assert "Tools is not valid JSON" in page.inner_text("#settings-error")
    assert page.input_value("#input") == "Hi"  # nothing was sent: the message waits for a fix
    page.fill("#input", "")
    page.fill("#tools", "")
    page.dispatch_event("#tools", "change")


def run_snippet(command: list[str], code: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XAI_", "OPENAI_"))}
    env["XAI_API_KEY"] = API_KEY
    done = subprocess.run([*command, code], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_show_code_runs_as_pasted_and_switches_to_xai(page: Any, server: Server) -> None:
    new_chat(page, max_tokens="8")
    page.fill("#system", "You are terse.")
    page.fill("#temperature", "0.5")
    page.select_option("#reasoning-effort", "high")  # the default model is configured with low and high
    page.select_option("#format", "json_schema")
    page.fill("#schema", '{"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}')
    page.fill("#input", "Give me a number.")
    page.click("#show-code")
    codes = {}
    for lang in ("curl", "openai", "xai"):
        page.click(f"#code-dialog [data-lang={lang}]")
        if lang == "xai":  # the server says where its gRPC listener is
            assert page.input_value("#grpc-host") == f"localhost:{server.grpc_port}"
        codes[lang] = page.inner_text("#code")
    assert f"{server.base_url}/v1/chat/completions" in codes["curl"]
    if shutil.which("curl"):
        out = run_snippet(["bash", "-euo", "pipefail", "-c"], codes["curl"])
        assert "data: [DONE]" in out and '"usage"' in out
    for lang in ("openai", "xai"):
        assert "temperature=0.5" in codes[lang] and 'reasoning_effort="high"' in codes[lang]
        assert "You are terse." in codes[lang]
        out = run_snippet([sys.executable, "-c"], codes[lang])
        assert "usage:" in out and "finish_reason:" in out, out
    page.check("#code-dialog input[value=xai]")
    xai = page.inner_text("#code")
    assert "api_host" not in xai and 'os.environ["XAI_API_KEY"]' in xai
    page.click("#code-dialog [data-lang=openai]")
    assert 'base_url="https://api.x.ai/v1"' in page.inner_text("#code")
    page.click("#code-dialog [data-lang=curl]")
    assert "curl https://api.x.ai/v1/chat/completions" in page.inner_text("#code")
    page.check("#code-dialog input[value=local]")
    open_access = page.evaluate(
        """async () => {
            const { snippet } = await import('/playground/snippets.js');
            const body = { model: 'm', messages: [{ role: 'user', content: 'Hi' }], stream: true };
            const request = { api: 'chat', body, chat: body, server: [] };
            return snippet('curl', request, { target: 'local', keyRequired: false, baseUrl: 'http://x/v1' }).code;
        }"""
    )
    assert 'Bearer ${XAI_API_KEY:-local}"' in open_access  # not an empty token (a 401) when the variable is unset
    page.click("#close-code")
    page.fill("#input", "")
    page.fill("#system", "")
    page.fill("#temperature", "")
    page.select_option("#reasoning-effort", "")
    page.select_option("#format", "text")


def test_server_side_tools_run_in_the_transcript_and_show_code_emits_them(page: Any, server: Server) -> None:
    new_chat(page, max_tokens="64")
    assert page.is_disabled("#tool-web")  # no search backend: greyed out, with the server's reason
    assert "--web-search-url" in page.inner_text("#web-why")
    assert page.is_enabled("#tool-code") and page.is_enabled("#mcp-url")
    page.fill("#temperature", "0")
    page.select_option("#tool-choice", "required")  # the small base model rarely picks a tool by itself
    with mcp_server("streamable") as url:
        page.fill("#mcp-url", url)
        page.fill("#mcp-label", "calc")
        page.fill("#mcp-allowed", "add")  # not its `hang` tool
        page.dispatch_event("#mcp-url", "change")
        page.fill("#input", "Add 2 and 3.")
        page.click("#send")
        last_answer(page).locator(".stat[data-stat=completion]").wait_for()
        assert not last_answer(page).locator(".error").count()
        call = last_answer(page).locator(".server-call").first
        assert call.get_attribute("data-type") == "mcp_call" and call.get_attribute("data-status") == "completed"
        assert call.locator("summary b").inner_text() == "MCP calc.add"
        args = json.loads(call.locator(".call-args").inner_text())
        assert call.locator(".call-output").inner_text() == str(args["a"] + args["b"])  # the MCP server's answer
        completed = last_answer(page).locator(".server-call[data-status=completed]").count()
        assert stat(page, "server-tools") == str(completed)
        # Show code: the same request on the Responses API (where the server runs the tools), run as pasted.
        page.fill("#input", "Add 2 and 3.")
        page.click("#show-code")
        codes = {}
        for lang in ("curl", "openai", "xai"):
            page.click(f"#code-dialog [data-lang={lang}]")
            codes[lang] = page.inner_text("#code")
        assert f"{server.base_url}/v1/responses" in codes["curl"] and '"type": "mcp"' in codes["curl"]
        assert "client.responses.create(" in codes["openai"]
        out = run_snippet([sys.executable, "-c"], codes["openai"])
        assert "[mcp_call]" in out and "usage:" in out, out
        assert "from xai_sdk.tools import mcp" in codes["xai"] and 'include=["mcp_call_output"]' in codes["xai"]
        assert 'allowed_tool_names=["add"]' in codes["xai"]
        out = run_snippet([sys.executable, "-c"], codes["xai"])
        assert "tool call: add" in out and "tool output:" in out, out
        page.check("#code-dialog input[value=xai]")  # xAI takes the same tool shapes, without include
        page.click("#code-dialog [data-lang=curl]")
        xai = page.inner_text("#code")
        assert "curl https://api.x.ai/v1/responses" in xai and '"server_url": "http://127.0.0.1:' in xai

        page.check("#code-dialog input[value=local]")
        page.click("#close-code")
    page.fill("#mcp-url", "")
    page.fill("#mcp-allowed", "")
    # Code execution in the server's sandbox: the code and what it printed are in the transcript.
    page.check("#tool-code")
    page.fill("#input", "Print the sum of 2 and 3 with Python.")
    page.click("#send")
    last_answer(page).locator(".stat[data-stat=completion]").wait_for()
    call = last_answer(page).locator(".server-call").first
    assert call.get_attribute("data-type") == "code_interpreter_call"
    assert call.locator(".call-code").inner_text().strip()  # the model's code
    if call.get_attribute("data-status") == "completed":
        assert call.locator(".call-output").count() == 1  # its output, asked for with include
    sent = page.evaluate("JSON.parse(localStorage.getItem('localxai.conversations'))[0].lastRequest")
    assert sent["tools"] == [{"type": "code_interpreter"}] and sent["include"] == ["code_interpreter_call.outputs"]
    assert sent["store"] is False and sent["tool_choice"] == "required" and sent["max_output_tokens"] == 64
    page.click("#show-code")  # aimed at xAI: no include (its REST API returns no tool outputs), and a note says so
    page.check("#code-dialog input[value=xai]")
    page.click("#code-dialog [data-lang=curl]")
    assert '"code_interpreter"' in page.inner_text("#code") and '"include"' not in page.inner_text("#code")
    assert "does not return what server-side tools output" in page.inner_text("#code-note")
    page.check("#code-dialog input[value=local]")
    page.click("#close-code")
    page.uncheck("#tool-code")
    page.select_option("#tool-choice", "")
    page.fill("#temperature", "")


def test_markdown_is_rendered_and_html_is_escaped(page: Any) -> None:
    html = page.evaluate(
        """async () => {
            const { renderMarkdown } = await import('/playground/markdown.js');
            return renderMarkdown('# T\\n**b** `c<d>`\\n\\n```py\\nx = 1 < 2\\n```\\n- one\\n- two\\n'
                + '<img src=x onerror=alert(1)> [l](javascript:alert(1)) [ok](https://x.ai/)');
        }"""
    )
    assert "<h1>T</h1>" in html and "<strong>b</strong>" in html and "<code>c&lt;d&gt;</code>" in html
    assert '<code class="language-py">x = 1 &lt; 2</code>' in html and "<ul><li>one</li><li>two</li></ul>" in html
    assert "<img" not in html and "&lt;img" in html and 'href="javascript' not in html
    assert '<a href="https://x.ai/" target="_blank" rel="noopener noreferrer">ok</a>' in html
