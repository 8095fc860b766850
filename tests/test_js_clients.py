"""JavaScript clients against a real server: the Vercel AI SDK's xAI provider (`xai.responses`, with
generateText and streamText) and the openai package, as installed by `make test` (npm ci in tests/js)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import API_KEY, Server

JS = Path(__file__).parent / "js"


def test_vercel_ai_sdk_and_openai_node_on_the_responses_api(real_server: Server) -> None:
    node = shutil.which("node")
    if node is None:  # make test needs only Python, a compiler and cmake; CI has Node.js
        pytest.skip("Node.js is not installed: the JavaScript clients are not tested on this machine")
    assert (JS / "node_modules").is_dir(), "run `make test` (it runs npm ci in tests/js when npm is there)"
    done = subprocess.run(
        [node, "responses.mjs", real_server.v1, API_KEY, "gemma-3-270m"],
        cwd=JS,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["generateText"]["text"] and seen["generateText"]["inputTokens"] > 0
    assert seen["streamText"]["text"] and seen["streamText"]["usage"]["outputTokens"] > 0
    openai_node = seen["openai"]
    # The answer's text itself may be empty: on a server that has served the whole suite, the prompt's
    # cached KV can tip this base model's first greedy token to its end of turn (docs/engine.md, Determinism).
    assert isinstance(openai_node["first"], str) and openai_node["firstStatus"] in ("completed", "incomplete")
    assert openai_node["secondInput"] > openai_node["firstInput"]
    assert openai_node["cached"] >= openai_node["firstInput"] - 1  # the stored conversation hit the cache
