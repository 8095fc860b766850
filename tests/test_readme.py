"""The README's examples work as pasted against `make serve`.

Every code block of the README's "Examples" section is extracted and run, unchanged but for the
ports, against a real server started as `make serve` starts it: the embedded default model, no keys.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import Server, start_server, stop_server

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"```(\w+)\n(.*?)```", re.S)


def example_blocks() -> list[tuple[str, str]]:
    text = README.read_text()
    section = text[text.index("## Examples") :]
    section = section[: section.index("\n## ", 1)]
    return [(lang, code) for lang, code in BLOCK.findall(section)]


@pytest.fixture(scope="module")
def plain_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`make serve`: no flags but the ports (the tests cannot take 8000 and 50051)."""
    server = start_server(tmp_path_factory.mktemp("readme"))
    yield server
    stop_server(server)


def test_the_examples_section_has_every_client() -> None:
    langs = [lang for lang, _ in example_blocks()]
    assert langs == ["sh", "python", "python", "sh", "python", "sh", "python", "python"]


@pytest.mark.parametrize("index", range(8))
def test_readme_example_runs_as_pasted(plain_server: Server, index: int) -> None:
    lang, code = example_blocks()[index]
    port = plain_server.base_url.rsplit(":", 1)[1]
    code = code.replace("127.0.0.1:8000", f"127.0.0.1:{port}").replace(
        "localhost:50051", f"localhost:{plain_server.grpc_port}"
    )
    command = ["bash", "-euo", "pipefail", "-c", code] if lang == "sh" else [sys.executable, "-c", code]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XAI_", "OPENAI_"))}
    if lang == "sh" and index > 0:
        env["XAI_API_KEY"] = "local"  # what the first block exports, in the reader's same shell
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip(), "the example printed nothing"
    if lang == "sh":
        assert '"object":"chat.completion"' in done.stdout.replace(" ", "") or '"object":"response"' in done.stdout
