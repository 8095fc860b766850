"""Connection limits against a real uvicorn server on a loopback port, driven by raw sockets."""

from __future__ import annotations

import asyncio
import json
import select
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from localxai.errors import ConfigError
from localxai.httpapi.connections import ConnectionLimits, LimitedHttpToolsProtocol, connection_limits

from conftest import API_KEY, Server, start_server, stop_server

pytestmark = pytest.mark.timeout(30)

HEADER_TIMEOUT_S = 0.5
KEEP_ALIVE_S = 0.5
MAX_HEADER_BYTES = 8 * 1024
BODY_TIMEOUT_S = 2.5  # more than the slow-body test's pause of three header timeouts
LIMITS = connection_limits(ConnectionLimits(HEADER_TIMEOUT_S, MAX_HEADER_BYTES, KEEP_ALIVE_S, BODY_TIMEOUT_S))
CLOSED_WITHIN_S = 3.0  # six times the limits: a generous margin, still well under uvicorn's 5 s keep-alive
STREAM_EVENTS, STREAM_GAP_S = 5, 0.4  # a 2 s stream: four header timeouts


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """/stream: a slow SSE stream; /early: answers before reading the body (like a 401);
    anything else: reads the body and answers `<path> <body length>`."""
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        for i in range(STREAM_EVENTS):
            await asyncio.sleep(STREAM_GAP_S)
            await send({"type": "http.response.body", "body": b"data: %d\n\n" % i, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    size, more = 0, scope["path"] != "/early"
    while more:
        message = await receive()
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    body = f"{scope['path']} {size}".encode()
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, lifespan="off", log_level="warning", timeout_graceful_shutdown=1, **LIMITS)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    yield listener.getsockname()[1]
    server.should_exit = True
    thread.join(10)
    assert not thread.is_alive()


class Connection:
    """A raw client socket with just enough HTTP/1.1 to read responses."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.buffer = b""

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("closed by the server")
        self.buffer += data

    def _take(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self._fill()
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def _line(self, end: bytes = b"\r\n") -> bytes:
        while end not in self.buffer:
            self._fill()
        line, self.buffer = self.buffer.split(end, 1)
        return line

    def response(self) -> tuple[int, dict[str, str], bytes]:
        status_line, *lines = self._line(b"\r\n\r\n").decode("latin-1").split("\r\n")
        headers = {name.lower(): value.strip() for name, value in (line.split(":", 1) for line in lines)}
        if headers.get("transfer-encoding") == "chunked":
            chunks = []
            while size := int(self._line(), 16):
                chunks.append(self._take(size))
                self._line()
            self._line()
            body = b"".join(chunks)
        else:
            body = self._take(int(headers["content-length"]))
        return int(status_line.split()[1]), headers, body

    def wait_closed(self, limit_s: float = CLOSED_WITHIN_S) -> tuple[float, bytes]:
        """Seconds until the server closed the connection (inf: still open after limit_s), and what it sent."""
        start, received = time.monotonic(), self.buffer
        while (left := limit_s - (time.monotonic() - start)) > 0:
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                return time.monotonic() - start, received
            if not data:
                return time.monotonic() - start, received
            received += data
        return float("inf"), received


def get(path: str = "/") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode()


def test_stalled_headers_get_408_and_the_connection_closed(port: int) -> None:
    with Connection(port) as conn:
        conn.send(b"GET / HTTP/1.1\r\nHost: test\r\nX-Slow: ")
        elapsed, received = conn.wait_closed()
    assert elapsed < CLOSED_WITHIN_S
    assert received.startswith(b"HTTP/1.1 408 ")


def test_trickled_headers_do_not_extend_the_deadline(port: int) -> None:
    """Slowloris: one byte every 0.1 s keeps an inactivity timer alive, not a deadline."""
    start = time.monotonic()
    with Connection(port) as conn:
        conn.send(b"GET / HTTP/1.1\r\nHost: test\r\n")
        try:
            while time.monotonic() - start < CLOSED_WITHIN_S:
                conn.send(b"x")
                if select.select([conn.sock], [], [], 0.1)[0]:
                    break
        except OSError:  # reset by the server while sending
            pass
        elapsed, received = conn.wait_closed(limit_s=1)
    assert time.monotonic() - start < CLOSED_WITHIN_S + 1 and elapsed < 1
    assert received == b"" or received.startswith(b"HTTP/1.1 408 ")


def test_a_silent_connection_is_closed_without_a_response(port: int) -> None:
    with Connection(port) as conn:
        elapsed, received = conn.wait_closed()
    assert elapsed < CLOSED_WITHIN_S
    assert received == b""


def test_a_huge_header_is_refused_before_it_is_all_sent(port: int) -> None:
    """32 MiB of header in 64 KiB pieces: the server closes long before (kernel buffers hold a few MiB)."""
    total, piece = 32 * 1024 * 1024, b"a" * 65536
    sent, received = 0, b""
    with Connection(port) as conn:
        try:
            conn.send(b"GET / HTTP/1.1\r\nHost: test\r\nX-Huge: ")
            while sent < total:
                conn.send(piece)
                sent += len(piece)
                if select.select([conn.sock], [], [], 0)[0]:
                    received = conn.wait_closed()[1]
                    break
        except OSError:  # reset by the server: it closed with our bytes unread
            pass
    assert sent < total
    assert received == b"" or received.startswith(b"HTTP/1.1 431 ")


def test_headers_over_the_limit_get_431(port: int) -> None:
    with Connection(port) as conn:
        conn.send(b"GET / HTTP/1.1\r\nHost: test\r\nX-Big: " + b"b" * MAX_HEADER_BYTES + b"\r\n\r\n")
        status, headers, body = conn.response()
        elapsed, _ = conn.wait_closed()
    assert status == 431
    assert headers["connection"] == "close"
    assert json.loads(body) == {
        "code": "Client specified an invalid argument",
        "error": "Request line and headers are too large.",
    }
    assert elapsed < CLOSED_WITHIN_S


def test_headers_just_under_the_limit_with_a_body_in_the_same_write_work(port: int) -> None:
    body = b"z" * 100_000
    head = f"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: {len(body)}\r\nX-Pad: ".encode()
    pad = MAX_HEADER_BYTES - len(head) - len(b"\r\n\r\n")
    with Connection(port) as conn:
        conn.send(head + b"p" * pad + b"\r\n\r\n" + body)
        assert conn.response()[::2] == (200, b"/echo 100000")


def test_an_idle_keep_alive_connection_is_closed(port: int) -> None:
    with Connection(port) as conn:
        conn.send(get())
        assert conn.response()[0] == 200
        elapsed, received = conn.wait_closed()
    assert elapsed < CLOSED_WITHIN_S
    assert received == b""


def test_a_stalled_second_request_on_a_keep_alive_connection_is_closed(port: int) -> None:
    with Connection(port) as conn:
        conn.send(get())
        assert conn.response()[0] == 200
        conn.send(b"GET / HTTP/1.1\r\nHo")
        elapsed, received = conn.wait_closed()
    assert elapsed < CLOSED_WITHIN_S
    assert received.startswith(b"HTTP/1.1 408 ")


def test_requests_on_a_keep_alive_connection_and_pipelined_work(port: int) -> None:
    with Connection(port) as conn:
        conn.send(get("/one"))
        assert conn.response()[::2] == (200, b"/one 0")
        conn.send(get("/two"))
        assert conn.response()[::2] == (200, b"/two 0")
        conn.send(get("/three") + get("/four"))
        assert conn.response()[::2] == (200, b"/three 0")
        assert conn.response()[::2] == (200, b"/four 0")


def test_a_slow_stream_outlasts_the_header_timeout_and_keep_alive_goes_on(port: int) -> None:
    with Connection(port) as conn:
        conn.send(get("/stream"))
        status, _, body = conn.response()
        assert status == 200
        assert body == b"".join(b"data: %d\n\n" % i for i in range(STREAM_EVENTS))
        conn.send(get("/after"))
        assert conn.response()[::2] == (200, b"/after 0")


def test_a_slow_body_is_not_cut_by_the_header_deadline(port: int) -> None:
    with Connection(port) as conn:
        conn.send(b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 10\r\n\r\n12345")
        time.sleep(3 * HEADER_TIMEOUT_S)
        conn.send(b"67890")
        assert conn.response()[::2] == (200, b"/echo 10")


def test_a_connection_idle_after_the_body_of_an_early_answer_is_closed(port: int) -> None:
    """The deadline starts when both the response and the request body are done, whichever comes last."""
    with Connection(port) as conn:
        conn.send(b"POST /early HTTP/1.1\r\nHost: test\r\nContent-Length: 10\r\n\r\n12345")
        assert conn.response()[::2] == (200, b"/early 0")
        conn.send(b"67890")
        elapsed, received = conn.wait_closed()
    assert elapsed < CLOSED_WITHIN_S
    assert received == b""


def trickle_until_answered(conn: Connection, limit_s: float) -> float:
    """Send one body byte every 0.2 s (an inactivity timer would never fire) until the server answers or
    closes; the seconds that took."""
    start = time.monotonic()
    try:
        while time.monotonic() - start < limit_s and not select.select([conn.sock], [], [], 0.2)[0]:
            conn.send(b"x")
    except OSError:  # reset by the server while sending
        pass
    return time.monotonic() - start


def test_a_trickled_body_gets_408_at_the_body_deadline_and_the_connection_closed(port: int) -> None:
    with Connection(port) as conn:
        conn.send(b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 1000000\r\n\r\n12345")
        elapsed = trickle_until_answered(conn, BODY_TIMEOUT_S + CLOSED_WITHIN_S)
        status, headers, body = conn.response()
        closed, _ = conn.wait_closed()
    assert BODY_TIMEOUT_S - 0.5 < elapsed < BODY_TIMEOUT_S + CLOSED_WITHIN_S
    assert (status, headers["connection"]) == (408, "close") and closed < CLOSED_WITHIN_S
    assert json.loads(body) == {
        "code": "Client specified an invalid argument",
        "error": "The request body did not arrive in time.",
    }


def test_a_body_trickled_after_an_early_answer_is_cut_at_the_deadline(port: int) -> None:
    """The app answered without the body (a 401, a 413): the deadline only closes the connection."""
    with Connection(port) as conn:
        conn.send(b"POST /early HTTP/1.1\r\nHost: test\r\nContent-Length: 1000000\r\n\r\n12345")
        assert conn.response()[::2] == (200, b"/early 0")
        elapsed = trickle_until_answered(conn, BODY_TIMEOUT_S + CLOSED_WITHIN_S)
        closed, received = conn.wait_closed()
    assert elapsed < BODY_TIMEOUT_S + CLOSED_WITHIN_S and closed < CLOSED_WITHIN_S
    assert received == b""


def test_localxai_serve_has_a_body_deadline_flag(tmp_path: Path) -> None:
    """`--body-timeout-s 1`: a chat request whose body stalls is answered 408 after about a second, in
    xAI's format, counted as 408, and the server goes on serving."""
    server = start_server(
        tmp_path, "--engine", "fake", "--api-key", API_KEY, "--data-dir", str(tmp_path), "--body-timeout-s", "1"
    )
    try:
        port = int(server.base_url.rsplit(":", 1)[1])
        head = (
            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {API_KEY}\r\nContent-Length: 100\r\n\r\n"
        )
        with Connection(port) as conn:
            start = time.monotonic()
            conn.send(head.encode() + b'{"model": "fake-model", ')
            status, headers, body = conn.response()
            elapsed = time.monotonic() - start
            closed, _ = conn.wait_closed()
        assert 0.8 < elapsed < 1 + CLOSED_WITHIN_S and closed < CLOSED_WITHIN_S
        assert (status, headers["connection"]) == (408, "close")
        assert json.loads(body)["error"] == "The request body did not arrive in time."
        metrics = httpx.get(server.base_url + "/metrics", headers={"Authorization": f"Bearer {API_KEY}"}).text
        assert 'status="408"' in metrics  # (route "unmatched": the body is read before routing, as for a 413)
    finally:
        stop_server(server)


def test_limits_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="header_timeout_s"):
        ConnectionLimits(header_timeout_s=0)


def test_defaults_are_documented_values() -> None:
    kwargs = connection_limits()
    assert issubclass(kwargs["http"], LimitedHttpToolsProtocol)
    assert kwargs["http"].limits == ConnectionLimits(
        header_timeout_s=10.0, max_header_bytes=65536, keep_alive_s=5.0, body_timeout_s=30.0
    )
    assert kwargs["timeout_keep_alive"] == 5.0


def test_localxai_serve_uses_the_limits(real_server: Server) -> None:
    """The real server is wired with them: a header just over 64 KiB is refused with 431; it keeps serving."""
    port = int(real_server.base_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 65 * 1024 + b"\r\n\r\n")
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 431")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
