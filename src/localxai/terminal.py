"""`localxai chat`: a conversation in the terminal over the server's streaming /v1/chat/completions.

It talks to a running server, or, when none answers at the default address, starts one inside this
process on a free loopback port with a one-time key. Ctrl-C stops an answer (the HTTP stream is closed,
so the server stops generating); Ctrl-C at an empty prompt or Ctrl-D leaves.
"""

from __future__ import annotations

import argparse
import base64
import json
import mimetypes
import re
import secrets
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

import httpx

from localxai.errors import ConfigError
from localxai.hub import is_hub_ref
from localxai.settings import Settings, build_settings, client_api_key

DEFAULT_URL = "http://127.0.0.1:8000/v1"
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # C0 but \t and \n, DEL, C1: escape sequences, OSC 52
BLOCK = '"""'
HELP = f"""commands:
  /image PATH    attach an image to the next message
  /system TEXT   set the system prompt (/system alone clears it)
  /reset         forget the conversation (the system prompt stays)
  /exit          leave (or Ctrl-D; Ctrl-C at an empty prompt)
input: end a line with \\ to continue it on the next; or write a {BLOCK} block over several lines.
Ctrl-C while an answer streams stops it."""


@dataclass
class Conversation:
    model: str
    vision: bool
    system: str | None = None
    max_tokens: int | None = None
    messages: list[dict[str, Any]] = field(default_factory=list)
    images: list[str] = field(default_factory=list)  # data URLs for the next message

    def request(self, text: str) -> list[dict[str, Any]]:
        content: str | list[dict[str, Any]] = text
        if self.images:
            content = [{"type": "text", "text": text}] + [
                {"type": "image_url", "image_url": {"url": url}} for url in self.images
            ]
        system = [{"role": "system", "content": self.system}] if self.system else []
        return [*system, *self.messages, {"role": "user", "content": content}]


def run_chat(args: argparse.Namespace, settings: Settings) -> int:
    """`settings`: the state flags (--data-dir, --offline), for a server started here."""
    key = args.api_key or client_api_key()
    model = args.model
    local = model is not None and (is_hub_ref(model) or model.endswith(".gguf"))  # a model to load, not an id
    try:
        with _server(args.url, key, settings, model if local else None) as (url, key):
            client = httpx.Client(
                base_url=url,
                headers={"Authorization": f"Bearer {key or 'local'}"},
                timeout=httpx.Timeout(None, connect=5),
            )
            with client:
                conversation = _conversation(client, None if local else model, args.system)
                conversation.max_tokens = args.max_tokens
                return Chat(client, conversation, sys.stdin, sys.stdout).loop()
    except ConfigError as exc:
        print(f"localxai: {exc}", file=sys.stderr)
        return 1


@contextmanager
def _server(
    url: str | None, key: str | None, settings: Settings, model: str | None
) -> Iterator[tuple[str, str | None]]:
    """The API to talk to: `url`; else the default address if a server answers there; else one started here
    (with `model`, a GGUF path or hf: reference, when given)."""
    if model is None:
        target, why = running_server(url)
        if target is not None:
            yield target, key
            return
        print(f"{why} at {DEFAULT_URL}: starting the model in this process...", file=sys.stderr)
    elif url is not None:
        raise ConfigError("--url talks to a running server: give --model its model id, not a file")
    with _in_process(settings, model) as local:
        yield local


def running_server(url: str | None) -> tuple[str | None, str]:
    """The API of a running server: `url`, which must answer (else a ConfigError), or the default
    address if a server answers there. (None, why not) when none does."""
    target = url or DEFAULT_URL
    health = f"{server_root(target)}/health"
    try:
        status = httpx.get(health, timeout=2).status_code
    except httpx.TransportError as exc:
        if url is not None:
            raise ConfigError(f"no server at {url}: {exc}") from None
        return None, "no server"
    if status == 200:
        return target, ""
    if url is not None:
        raise ConfigError(f"no localxai server at {url}: {health} answered HTTP {status}")
    return None, f"no localxai server ({health} answered HTTP {status})"


def server_root(api: str) -> str:
    """Where the server's own routes (/health, /models) are, beside its /v1: at the root for
    http://host:port/v1, under a proxy's prefix too."""
    url = httpx.URL(api)
    path = url.path.rstrip("/").removesuffix("/v1")
    return f"{url.scheme}://{url.netloc.decode('ascii')}{path}"


@contextmanager
def _in_process(state: Settings, model: str | None) -> Iterator[tuple[str, str]]:
    """`localxai serve` on a free loopback port, in a thread, for this chat only (a one-time key)."""
    import uvicorn

    from localxai.httpapi.app import create_app
    from localxai.listen import bind_http
    from localxai.runtime import Runtime

    flags = {"data_dir": state.data_dir, "database_url": state.database_url, "offline": state.offline or None}
    settings = build_settings({**flags, "model": model})
    secret = "xai-" + secrets.token_urlsafe(24)
    settings = replace(settings, host="127.0.0.1", api_keys=(secret,), grpc_port=0)
    sock = bind_http(settings.host, 0)
    port = sock.getsockname()[1]
    runtime = Runtime.from_settings(settings)
    app = create_app(runtime, [])
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", log_config=None, access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{port}"
        while not server.started:
            if not thread.is_alive():
                raise ConfigError("the in-process server did not start")
            thread.join(0.05)
        yield base + "/v1", secret
    finally:
        server.should_exit = True
        try:
            thread.join(30)
        except KeyboardInterrupt:  # a second Ctrl-C: stop llama.cpp's threads before the interpreter goes
            runtime.halt()
            raise


def _conversation(client: httpx.Client, model: str | None, system: str | None) -> Conversation:
    try:
        response = client.get("/language-models")
    except httpx.TransportError as exc:
        raise ConfigError(f"cannot reach {client.base_url}: {exc}") from None
    if response.status_code != 200:
        raise ConfigError(f"{client.base_url}: {error_text(response)}")
    try:
        body = response.json()
        models = body.get("models", []) if isinstance(body, dict) else None
    except ValueError:
        models = None
    if not isinstance(models, list):
        raise ConfigError(f"{client.base_url} is not a localxai (or xAI) API: /language-models is not its JSON")
    if not models:
        raise ConfigError(f"{client.base_url} serves no model")
    chosen = next((m for m in models if model in (m["id"], *m.get("aliases", ()))), None) if model else models[0]
    if chosen is None:
        names = ", ".join(m["id"] for m in models)
        raise ConfigError(f"the server has no model {model!r} (it serves {names})")
    return Conversation(chosen["id"], "image" in chosen.get("input_modalities", ()), system)


def error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}: {response.text[:500]}"
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        error = error.get("message")
    return f"HTTP {response.status_code}: {error or body}"


class Chat:
    """The read-send-print loop; input and output are given so tests and pipes work alike."""

    def __init__(self, client: httpx.Client, conversation: Conversation, stdin: TextIO, stdout: TextIO) -> None:
        self.client = client
        self.conversation = conversation
        self.out = stdout
        self.interactive = stdin.isatty()
        self.tty = stdout.isatty()
        if self.interactive:
            with suppress(ImportError):
                import readline  # noqa: F401  (line editing and history for input())
        self.read: Callable[[str], str] = input if self.interactive else _reader(stdin)

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def clean(self, text: str) -> str:
        """The server's text for the terminal: no control characters (a model could write escape sequences)."""
        return CONTROL.sub("", text) if self.tty else text

    def loop(self) -> int:
        c = self.conversation
        vision = ", takes images" if c.vision else ""
        self.say(f"chatting with {c.model}{vision} at {self.client.base_url}; /help for commands")
        while True:
            try:
                text = self.read_message()
            except EOFError:
                self.say("")
                return 0
            except KeyboardInterrupt:
                self.say("")
                if self.interactive and _typed():
                    continue  # Ctrl-C drops a line being typed; at an empty prompt it leaves
                return 0
            if text is None or not text.strip():
                continue
            if text.startswith("/"):
                if self.command(text.strip()) == "exit":
                    return 0
                continue
            self.send(text)

    def read_message(self) -> str | None:
        """One message: a line, lines joined by a trailing backslash, or a triple-quoted block.
        None: Ctrl-C inside a multi-line message (it is dropped)."""
        first = self.read(">>> ")
        if first.strip().startswith(BLOCK):
            return self._block(first.strip()[len(BLOCK) :])
        lines = [first]
        try:
            while lines[-1].endswith("\\"):
                lines[-1] = lines[-1][:-1]
                lines.append(self.read("... "))
        except KeyboardInterrupt:
            self.say("")
            return None
        return "\n".join(lines)

    def _block(self, rest: str) -> str | None:
        if rest.rstrip().endswith(BLOCK):  # """one line"""
            return rest.rstrip()[: -len(BLOCK)]
        lines = [rest] if rest else []
        try:
            while True:
                line = self.read("... ")
                if line.rstrip().endswith(BLOCK):
                    lines.append(line.rstrip()[: -len(BLOCK)])
                    return "\n".join(lines).strip("\n")
                lines.append(line)
        except KeyboardInterrupt:
            self.say("")
            return None

    def command(self, text: str) -> str | None:
        name, _, arg = text.partition(" ")
        arg = arg.strip()
        c = self.conversation
        if name in ("/exit", "/quit", "/bye"):
            return "exit"
        if name == "/help":
            self.say(HELP)
        elif name == "/reset":
            c.messages.clear()
            c.images.clear()
            self.say("(conversation cleared)")
        elif name == "/system":
            c.system = arg or None
            self.say(f"(system prompt set: {arg})" if arg else "(system prompt cleared)")
        elif name == "/image":
            self.attach(arg)
        else:
            self.say(f"unknown command {name}; /help lists them")
        return None

    def attach(self, arg: str) -> None:
        c = self.conversation
        if not c.vision:
            self.say(f"{c.model} does not take images (serve a vision model: a GGUF with its mmproj)")
            return
        path = Path(arg).expanduser()
        if not arg or not path.is_file():
            self.say(f"/image needs the path of an image file, got {arg!r}")
            return
        mime = mimetypes.guess_type(path.name)[0] or "image/png"
        if not mime.startswith("image/"):
            self.say(f"{path} is not an image ({mime})")
            return
        try:
            data = path.read_bytes()
        except OSError as exc:
            self.say(f"cannot read {path}: {exc.strerror or exc}")
            return
        c.images.append(f"data:{mime};base64,{base64.b64encode(data).decode()}")
        self.say(f"(image {path.name} attached to the next message)")

    def send(self, text: str) -> None:
        c = self.conversation
        body: dict[str, Any] = {"model": c.model, "messages": c.request(text), "stream": True}
        if c.max_tokens:
            body["max_tokens"] = c.max_tokens
        answer: list[str] = []
        try:
            with self.client.stream("POST", "/chat/completions", json=body) as response:
                if response.status_code != 200:
                    response.read()
                    self.say(f"error: {self.clean(error_text(response))}")
                    return
                for delta in _deltas(response):
                    if delta.get("reasoning_content"):
                        self.out.write(_dim(self.clean(delta["reasoning_content"]), self.interactive))
                    if delta.get("content"):
                        answer.append(delta["content"])
                        self.out.write(self.clean(delta["content"]))
                    self.out.flush()
        except KeyboardInterrupt:  # closing the stream (leaving the with) cancels the generation
            self.say("\n(stopped)")
            return
        except httpx.TransportError as exc:
            self.say(f"\nerror: the connection broke: {exc}")
            return
        except StreamError as exc:
            self.say(f"\nerror: {self.clean(str(exc))}")
            return
        self.say("")
        c.messages += [c.request(text)[-1], {"role": "assistant", "content": "".join(answer)}]
        c.images.clear()


class StreamError(Exception):
    pass


def _deltas(response: httpx.Response) -> Iterator[dict[str, Any]]:
    for line in response.iter_lines():
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        try:
            chunk = json.loads(data)
        except ValueError:
            raise StreamError(f"the server sent a malformed event: {data[:200]!r}") from None
        if not isinstance(chunk, dict):
            raise StreamError(f"the server sent a malformed event: {data[:200]!r}")
        if "error" in chunk:
            error = chunk["error"]
            raise StreamError(error.get("message", error) if isinstance(error, dict) else error)
        for choice in chunk.get("choices", ()):
            yield choice.get("delta") or {}


def _typed() -> bool:
    """Whether the prompt held text when Ctrl-C came (readline keeps its buffer until the next input)."""
    try:
        import readline
    except ImportError:
        return False
    return bool(readline.get_line_buffer())


def _dim(text: str, tty: bool) -> str:
    return f"\x1b[2m{text}\x1b[0m" if tty else text


def _reader(stream: TextIO) -> Callable[[str], str]:
    """input() for a pipe: no prompt echo, EOFError at the end."""

    def read(_prompt: str) -> str:
        line = stream.readline()
        if not line:
            raise EOFError
        return line.rstrip("\n")

    return read
