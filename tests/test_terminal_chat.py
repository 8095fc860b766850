"""`localxai chat` driven through a pseudo-terminal, as a person types: against the real server on the
default model, and on its own (a server in its process) with a vision model pulled from a stand-in Hub."""

from __future__ import annotations

import fcntl
import io
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import httpx
import pytest

from localxai.errors import ConfigError
from localxai.settings import build_settings
from localxai.terminal import Chat, Conversation, _conversation, _server, server_root

from conftest import API_KEY, AUTH, Server, http_server
from fake_hub import FakeHub

FIXTURE = Path(__file__).parent / "fixtures" / "tiny-vision"
PROMPT = ">>> "


class Terminal:
    """A child process on a pty; `expect` reads until a pattern shows up (bounded in time)."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 400, 0, 0))  # wide: readline echoes whole lines
        self.process = subprocess.Popen(
            args, stdin=slave, stdout=slave, stderr=slave, env=env, preexec_fn=_own_terminal, close_fds=True
        )
        os.close(slave)
        self.master = master
        self.seen = ""

    def expect(self, pattern: str, timeout: float = 60) -> str:
        """The output up to and including the first match of `pattern`; consumed from what is seen."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while not (match := regex.search(self.seen)):
            left = deadline - time.monotonic()
            if left <= 0 or not self._read(left):
                raise AssertionError(f"no {pattern!r} in the output:\n{self.seen[-3000:]}")
        before, self.seen = self.seen[: match.end()], self.seen[match.end() :]
        return before

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], min(timeout, 1))
        if not ready:
            return True
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO: the child has gone and the pty is closed
            return False
        self.seen += data.decode(errors="replace").replace("\r\n", "\n")
        return bool(data)

    def send(self, text: str) -> None:
        os.write(self.master, text.encode())

    def interrupt(self) -> None:
        self.send("\x03")  # the pty's line discipline turns it into SIGINT for the foreground process

    def wait(self, timeout: float = 30) -> int:
        while self._read(0.1):
            if self.process.poll() is not None:
                break
        return self.process.wait(timeout)

    def close(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        os.close(self.master)


def _own_terminal() -> None:
    """In the child: a new session whose controlling terminal is the pty, so Ctrl-C becomes SIGINT."""
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


@pytest.fixture
def terminal_env() -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("LOCALXAI_", "XAI_"))},
        "TERM": "dumb",
        "XAI_API_KEY": API_KEY,
    }


@pytest.fixture
def chat(real_server: Server, terminal_env: dict[str, str]) -> Iterator[Terminal]:
    term = Terminal(
        [sys.executable, "-m", "localxai", "chat", "--url", real_server.v1, "--max-tokens", "24"], terminal_env
    )
    yield term
    term.close()


def answer(term: Terminal, question: str) -> str:
    """Send one line; the text printed before the next prompt."""
    term.send(question + "\n")
    term.expect(re.escape(question) + "\n")  # the terminal's echo
    return term.expect(PROMPT)[: -len(PROMPT)]


def test_a_conversation_in_the_terminal(chat: Terminal) -> None:
    chat.expect(r"chatting with gemma-3-270m at http://127\.0\.0\.1:\d+/v1/; /help for commands\n")
    chat.expect(PROMPT)
    assert answer(chat, "What is the capital of France? Answer in one word.").strip()
    assert "(system prompt set: You answer in French.)" in answer(chat, "/system You answer in French.")
    assert "(conversation cleared)" in answer(chat, "/reset")
    assert "gemma-3-270m does not take images" in answer(chat, "/image photo.png")
    assert "unknown command /nope" in answer(chat, "/nope")
    # A line ending in a backslash continues on the next; so does a triple-quoted block.
    chat.send("Name two colours \\\n")
    chat.expect(r"\.\.\. ")
    assert answer(chat, "of the rainbow.").strip()
    chat.send('"""\n')
    chat.expect(r"\.\.\. ")
    chat.send("Say yes.\n")
    chat.expect(r"\.\.\. ")
    assert answer(chat, '"""').strip()
    chat.send("\x04")  # Ctrl-D at the prompt
    assert chat.wait() == 0


def test_ctrl_c_stops_an_answer_and_the_chat_goes_on(real_server: Server, terminal_env: dict[str, str]) -> None:
    term = Terminal([sys.executable, "-m", "localxai", "chat", "--url", real_server.v1], terminal_env)  # no limit
    try:
        term.expect(PROMPT)
        term.send("Write a very long story about a dragon, with many chapters.\n")
        term.expect("chapters.\n")
        term.expect(r"\w+\W+\w+\W+\w+")  # a few words of the answer have streamed
        term.interrupt()
        term.expect(r"\(stopped\)\n" + PROMPT, timeout=20)
        assert_generation_ends(real_server)  # the closed stream cancelled it on the server
        term.send("/system Answer in five words or fewer.\n")
        term.expect(PROMPT)
        term.send("Say hello.\n")
        term.expect("hello.\n")
        term.expect(r"\w+")
        term.interrupt()  # this one too: the model is a base model and rambles
        term.expect(r"\(stopped\)\n" + PROMPT, timeout=20)
        term.send("half a question")
        term.expect("half a question")  # readline has it
        term.interrupt()  # drops the line being typed, stays
        term.expect(PROMPT)
        assert term.process.poll() is None
        term.interrupt()  # at an empty prompt: leave
        assert term.wait() == 0
    finally:
        term.close()


def assert_generation_ends(server: Server) -> None:
    deadline = time.monotonic() + 5  # far less than the rest of a 1024-token answer would take
    while time.monotonic() < deadline:
        metrics = httpx.get(server.base_url + "/metrics", headers=AUTH, timeout=5).text
        running = re.search(r'^localxai_running_sequences\{model="gemma-3-270m"\} (\S+)$', metrics, re.M)
        assert running is not None, metrics[:2000]
        if float(running[1]) == 0:
            return
        time.sleep(0.1)
    raise AssertionError("the server still generates after the chat stopped the answer")


@pytest.mark.model
def test_on_its_own_it_starts_a_server_and_takes_images(terminal_env: dict[str, str], tmp_path: Path) -> None:
    """No server given: `chat --model hf:...` pulls the model and serves it inside its own process."""
    hub = FakeHub(
        repos={
            "acme/tiny-vision-GGUF": {
                "tiny-vision-F16.gguf": (FIXTURE / "model.gguf").read_bytes(),
                "mmproj-tiny-vision-F16.gguf": (FIXTURE / "mmproj.gguf").read_bytes(),
            }
        }
    )
    image = tmp_path / "red.png"
    image.write_bytes(RED_PNG)
    with http_server(hub.handler()) as url:
        env = {**terminal_env, "HF_ENDPOINT": url, "HF_HOME": str(tmp_path / "hf"), "LOCALXAI_CTX_SIZE": "512"}
        args = [
            "chat",
            "--model",
            "hf:acme/tiny-vision-GGUF",
            "--data-dir",
            str(tmp_path / "state"),
            "--max-tokens",
            "4",
        ]
        term = Terminal([sys.executable, "-m", "localxai", *args], env)
        try:
            term.expect(r"chatting with tiny-vision, takes images at http://127\.0\.0\.1:\d+/v1/", timeout=120)
            term.expect(PROMPT)
            assert "(image red.png attached to the next message)" in answer(term, f"/image {image}")
            assert "error" not in answer(term, "What colour is this?")
            assert "/image needs the path of an image file" in answer(term, f"/image {tmp_path / 'none.png'}")
            term.send("/exit\n")
            assert term.wait() == 0
        finally:
            term.close()


def test_a_message_carries_the_system_prompt_history_and_images() -> None:
    c = Conversation("m", vision=True, system="Be brief.")
    c.messages += [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    c.images.append("data:image/png;base64,AAAA")
    assert c.request("And this?") == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "And this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            ],
        },
    ]


def test_the_probe_asks_the_servers_health_and_wants_a_200(tmp_path: Path) -> None:
    assert server_root("http://127.0.0.1:8000/v1") == "http://127.0.0.1:8000"  # /health there, not /v1/health
    assert server_root("http://h:9/v1/") == "http://h:9"
    assert server_root("https://proxy.example/xai/v1") == "https://proxy.example/xai"

    class NotLocalxai(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(401)
            self.send_header("Content-Length", "0")
            self.end_headers()

    settings = build_settings({"data_dir": str(tmp_path)}, models=False)
    with http_server(NotLocalxai) as url:
        probe = _server(url + "/v1", None, settings, None)
        with pytest.raises(ConfigError, match=r"no localxai server at .*/v1: .*/health answered HTTP 401"):
            probe.__enter__()


def test_a_reply_that_is_not_the_api_is_a_clear_error() -> None:
    html = httpx.MockTransport(lambda request: httpx.Response(200, text="<html>hello</html>"))
    client = httpx.Client(transport=html, base_url="http://x/v1")
    with pytest.raises(ConfigError, match="is not a localxai"):
        _conversation(client, None, None)


class TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def chat_against(*events: str) -> tuple[Chat, io.StringIO]:
    body = "".join(f"data: {e}\n\n" for e in events)
    stream = httpx.MockTransport(lambda request: httpx.Response(200, text=body))
    out = TTY()
    return Chat(
        httpx.Client(transport=stream, base_url="http://x/v1"), Conversation("m", True), io.StringIO(), out
    ), out


def test_model_output_cannot_drive_the_terminal() -> None:
    delta = '{"choices": [{"delta": {"content": "hi\\u001b]52;c;ZXZpbA==\\u0007\\r\\n\\tthere\\u009b"}}]}'
    chat, out = chat_against(delta, "[DONE]")
    chat.send("Hi")
    assert out.getvalue() == "hi]52;c;ZXZpbA==\n\tthere\n"  # no ESC, BEL, CR or CSI
    assert chat.conversation.messages[-1]["content"] == "hi\x1b]52;c;ZXZpbA==\x07\r\n\tthere\x9b"  # history as sent


def test_a_malformed_event_or_an_unreadable_image_keeps_the_chat_going(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    chat, out = chat_against('{"choices": [{"delta": {"content": "a"}}]}', "{not json")
    chat.send("Hi")
    assert "error: the server sent a malformed event: '{not json'" in out.getvalue()
    image = tmp_path / "photo.png"
    image.write_bytes(RED_PNG)

    def denied(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", denied)
    chat.attach(str(image))
    assert f"cannot read {image}: Permission denied" in out.getvalue()
    assert chat.conversation.images == []


def _png() -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (8, 8), (255, 0, 0)).save(out, "PNG")
    return out.getvalue()


RED_PNG = _png()
