"""Scale-out: a localxai front door routing to upstream engines (real localxai processes on loopback)."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jsonschema
import pytest

from conftest import API_KEY, AUTH, Server, free_port, start_server, stop_server

FRONT_KEY = {"Authorization": "Bearer front"}
ASK = [{"role": "user", "content": "Tell me a story."}]


def config(tmp: Path, urls: list[str]) -> Path:
    path = tmp / f"models-{time.monotonic_ns()}.toml"
    path.write_text(
        "[[models]]\n"
        'id = "remote-gemma"\nengine = "upstream"\n'
        f"base_urls = {json.dumps(urls)}\n"
        'upstream_model = "gemma-3-270m"\napi_key_env = "UPSTREAM_KEY"\ncontext_length = 1024\n'
        'aliases = ["grok-4-remote"]\n'
    )
    return path


@pytest.fixture(scope="module")
def front(real_server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A front door whose model lives on the shared real server, plus one replica that is down."""
    tmp = tmp_path_factory.mktemp("front")
    dead = f"http://127.0.0.1:{free_port()}/v1"
    server = start_server(tmp, "--config", str(config(tmp, [real_server.v1, dead])), env={"UPSTREAM_KEY": API_KEY})
    yield server
    stop_server(server)


def chat(server: Server, **extra: object) -> httpx.Response:
    body = {"model": "remote-gemma", "messages": ASK, "max_tokens": 6, **extra}
    return httpx.post(server.v1 + "/chat/completions", json=body, headers=FRONT_KEY, timeout=120)


def test_models_and_completion_through_the_front(front: Server) -> None:
    models = httpx.get(front.v1 + "/models", headers=FRONT_KEY).json()["data"]
    assert [(m["id"], m["aliases"]) for m in models] == [("remote-gemma", ["grok-4-remote"])]
    for _ in range(4):  # one replica is down: every request still succeeds
        r = chat(front, model="grok-4-remote")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["object"] == "chat.completion" and body["model"] == "remote-gemma"
        usage = body["usage"]
        assert usage["prompt_tokens"] > 5 and 1 <= usage["completion_tokens"] <= 6
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_streaming_fidelity(front: Server) -> None:
    body = {
        "model": "remote-gemma",
        "messages": ASK,
        "max_tokens": 8,
        "stream": True,
        "stream_options": {"include_usage": True},
        "seed": 4,
    }
    with httpx.stream("POST", front.v1 + "/chat/completions", json=body, headers=FRONT_KEY, timeout=120) as r:
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-2]["choices"][0]["finish_reason"] in ("stop", "length")
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] >= 1
    assert len({c["id"] for c in chunks}) == 1


def test_tool_calls_arrive_whole(front: Server) -> None:
    tool = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "maxLength": 15}},
                "required": ["city"],
            },
        },
    }
    r = chat(front, tools=[tool], tool_choice="required", parallel_tool_calls=False, max_tokens=60, seed=1)
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    [call] = choice["message"]["tool_calls"]
    jsonschema.validate(json.loads(call["function"]["arguments"]), tool["function"]["parameters"])


def test_upstream_refusal_is_an_xai_error_without_internals(front: Server) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"not": {"type": "string"}}}}
    r = chat(front, response_format=fmt)
    assert r.status_code == 400
    assert r.json() == {
        "code": "Client specified an invalid argument",
        "error": "The upstream engine rejected the request (HTTP 400).",
    }


def test_cancellation_reaches_the_upstream(front: Server, real_server: Server) -> None:
    needle = "generation cancelled after"
    seen = real_server.log.read_text().count(needle)
    body = {"model": "remote-gemma", "messages": ASK, "max_tokens": 900, "temperature": 0, "stream": True}
    with httpx.stream("POST", front.v1 + "/chat/completions", json=body, headers=FRONT_KEY, timeout=60) as r:
        for _ in r.iter_lines():
            break
    deadline = time.monotonic() + 60
    while real_server.log.read_text().count(needle) <= seen:
        assert time.monotonic() < deadline, "the upstream kept generating"
        time.sleep(0.1)


def test_replica_killed_and_balancing(tmp_path: Path) -> None:
    replicas = [start_server(tmp_path, "--api-key", API_KEY, "--ctx-size", "512", "--grpc-port", "0") for _ in range(2)]
    front = start_server(
        tmp_path, "--config", str(config(tmp_path, [r.v1 for r in replicas])), env={"UPSTREAM_KEY": API_KEY}
    )
    try:
        for _ in range(6):
            assert chat(front, max_tokens=2).status_code == 200

        def served(replica: Server) -> float:
            text = httpx.get(replica.v1.removesuffix("/v1") + "/metrics", headers=AUTH).text
            return sum(
                float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith('localxai_requests_total{model="gemma-3-270m",route="/v1/chat/completions"')
            )

        assert all(served(r) >= 1 for r in replicas)  # the load was spread
        assert replica_health(front) == {"healthy": 2, "total": 2}
        replicas[0].process.send_signal(signal.SIGKILL)
        replicas[0].process.wait(30)
        statuses = [chat(front, max_tokens=2).status_code for _ in range(6)]
        assert statuses == [200] * 6  # requests not yet started never see the dead replica
        deadline = time.monotonic() + 30  # ejected at its first failure, or at the next health check
        while replica_health(front) != {"healthy": 1, "total": 2}:
            assert time.monotonic() < deadline
            time.sleep(0.5)
        routed = httpx.get(f"{front.base_url}/models", headers=AUTH).json()["data"][0]
        assert routed["status"]["value"] == "loaded" and routed["healthy"] is True
    finally:
        stop_server(front)
        for r in replicas:
            if r.process.poll() is None:
                stop_server(r)


def replica_health(front: Server) -> dict[str, int]:
    """The upstream model's replicas as /v1/models lists them (localxai's extra field)."""
    listed = httpx.get(f"{front.v1}/models", headers=AUTH).json()["data"][0]
    assert listed["healthy"] is (listed["replicas"]["healthy"] > 0)
    return dict(listed["replicas"])


def llama_server_binary() -> Path:
    import importlib.metadata

    version = importlib.metadata.version("llama-cpp-python")
    binary = (
        Path(__file__).parent.parent
        / "bench"
        / ".cache"
        / f"llama-cpp-python-{version}"
        / "build"
        / "bin"
        / "llama-server"
    )
    if not binary.is_file():
        pytest.skip("llama-server is not built: `make test` (or `make llama-server`) builds it")
    return binary


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """llama.cpp's own server on loopback, serving the default model, as an upstream replica."""
    import subprocess

    from localxai.engines.llamacpp.default_model import default_model_path

    model = default_model_path(Path.home() / ".cache" / "localxai" / "models")
    port = free_port()
    log = tmp_path_factory.mktemp("llama-server") / "llama-server.log"
    process = subprocess.Popen(
        [
            str(llama_server_binary()),
            "-m",
            str(model),
            "--port",
            str(port),
            "-t",
            "2",
            "-np",
            "2",
            "-c",
            "2048",
            "--no-jinja",
            "--chat-template",
            "gemma",
            "--no-webui",
        ],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        assert process.poll() is None, log.read_text()[-2000:]
        try:
            if httpx.get(base + "/health", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "llama-server did not start"
        time.sleep(0.2)
    yield base + "/v1"
    process.terminate()
    process.wait(30)


def test_llama_server_as_upstream(llama_server: str, tmp_path: Path) -> None:
    front = start_server(tmp_path, "--config", str(config(tmp_path, [llama_server])), env={"UPSTREAM_KEY": "unused"})
    try:
        r = chat(front, max_tokens=8, seed=3)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model"] == "remote-gemma" and body["object"] == "chat.completion"
        assert body["choices"][0]["finish_reason"] in ("stop", "length")
        assert 1 <= body["usage"]["completion_tokens"] <= 8 and body["usage"]["prompt_tokens"] > 5
        stream = {
            "model": "remote-gemma",
            "messages": ASK,
            "max_tokens": 8,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        with httpx.stream("POST", front.v1 + "/chat/completions", json=stream, headers=FRONT_KEY, timeout=60) as s:
            lines = [line for line in s.iter_lines() if line]
        assert lines[-1] == "data: [DONE]"
        chunks = [json.loads(line[6:]) for line in lines[:-1]]
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
        assert text and chunks[-1]["usage"]["completion_tokens"] >= 1
        logprobs = chat(front, max_tokens=3, logprobs=True, top_logprobs=2).json()["choices"][0]["logprobs"]
        assert len(logprobs["content"]) >= 1 and len(logprobs["content"][0]["top_logprobs"]) == 2
    finally:
        stop_server(front)


STAND_IN = '''#!{python}
"""Stands in for vLLM's command line in tests: `vllm serve MODEL --host H --port P --api-key K
--served-model-name N ...` runs localxai's scripted engine on that address, with that key and name."""
import argparse, os, sys
parser = argparse.ArgumentParser()
for name in ("command", "model"):
    parser.add_argument(name)
for flag in ("--host", "--port", "--api-key", "--served-model-name", "--tensor-parallel-size"):
    parser.add_argument(flag)
args, _ = parser.parse_known_args()
with open(os.environ["VLLM_STAND_IN_ARGS"], "w") as out:
    out.write(" ".join(sys.argv[1:]))
os.execv(sys.executable, [sys.executable, "-m", "localxai", "serve", "--engine", "fake",
         "--model-id", args.served_model_name, "--host", args.host, "--port", args.port,
         "--api-key", args.api_key, "--grpc-port", "0",
         "--database-url", "sqlite:///" + os.environ["VLLM_STAND_IN_DB"]])
'''


def test_managed_vllm_child_process(tmp_path: Path) -> None:
    """The process management of `--engine vllm`, with a stand-in for the vllm command (no GPU here)."""
    import os
    import sys

    bindir = tmp_path / "bin"
    bindir.mkdir()
    vllm = bindir / "vllm"
    vllm.write_text(STAND_IN.format(python=sys.executable))
    vllm.chmod(0o755)
    recorded = tmp_path / "vllm-args.txt"
    env = {
        "PATH": f"{bindir}:{os.environ['PATH']}",
        "VLLM_STAND_IN_ARGS": str(recorded),
        "VLLM_STAND_IN_DB": str(tmp_path / "child.db"),
    }
    front = start_server(
        tmp_path,
        "--engine",
        "vllm",
        "--model",
        "Qwen/Qwen3-0.6B",
        "--tensor-parallel-size",
        "2",
        "--vllm-arg=--max-model-len=4096",
        env=env,
    )
    try:
        args = recorded.read_text().split()
        assert args[:2] == ["serve", "Qwen/Qwen3-0.6B"]
        assert "--tensor-parallel-size" in args and args[args.index("--tensor-parallel-size") + 1] == "2"
        assert "--max-model-len=4096" in args and args[args.index("--host") + 1] == "127.0.0.1"
        child_port = int(args[args.index("--port") + 1])
        models = httpx.get(front.v1 + "/models", headers=FRONT_KEY).json()["data"]
        assert [m["id"] for m in models] == ["Qwen/Qwen3-0.6B"]
        r = httpx.post(
            front.v1 + "/chat/completions",
            headers=FRONT_KEY,
            timeout=60,
            json={"model": "Qwen/Qwen3-0.6B", "messages": ASK, "max_tokens": 5},
        )
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] >= 1
        # The child is reachable only with the random key the front door gave it.
        assert httpx.get(f"http://127.0.0.1:{child_port}/v1/models").status_code == 401
    finally:
        stop_server(front)
    with pytest.raises(httpx.TransportError):  # stopped with the server
        httpx.get(f"http://127.0.0.1:{child_port}/health", timeout=2)


def test_responses_api_on_an_upstream_model(front: Server) -> None:
    """The Responses API works for a model served by another engine: localxai translates to its chat
    completions and keeps the conversation itself (the upstream stores nothing)."""
    import openai

    client = openai.OpenAI(api_key=FRONT_KEY["Authorization"].split()[1], base_url=front.v1, max_retries=0)
    first = client.responses.create(model="grok-4-remote", input="Say hi.", max_output_tokens=6)
    assert first.model == "remote-gemma" and first.output_text
    second = client.responses.create(
        model="remote-gemma", previous_response_id=first.id, input="Again.", max_output_tokens=6
    )
    assert second.usage is not None and first.usage is not None
    assert second.usage.input_tokens > first.usage.input_tokens
    with client.responses.stream(model="remote-gemma", previous_response_id=second.id, input="More.",
                                 max_output_tokens=6) as stream:  # fmt: skip
        kinds = [event.type for event in stream]
    assert kinds[0] == "response.created" and kinds[-1] in ("response.completed", "response.incomplete")
    assert client.responses.retrieve(second.id).output_text == second.output_text
