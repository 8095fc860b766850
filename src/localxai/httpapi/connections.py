"""HTTP connection limits uvicorn lacks: a deadline and a size cap on each request's line + headers, and
a deadline on its body.

`connection_limits()` returns the extra `uvicorn.Config` keyword arguments: httptools (uvicorn's fast parser)
with the header deadline and size cap, the body deadline, and the idle keep-alive timeout.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from localxai.errors import ConfigError, Status

BODY_TIMED_OUT = "body_timed_out"  # in the request's scope state: the gateway counts the request as 408


@dataclass(frozen=True)
class ConnectionLimits:
    """header_timeout_s: the request line and headers must be complete this long after the connection opens,
    or after the previous response (and request body) on a keep-alive connection; else 408 (or a silent
    close when nothing arrived). Not applied while a request body is read or a response is sent.
    max_header_bytes: most bytes of request line + headers, the final blank line included; more: 431.
    keep_alive_s: an idle keep-alive connection is closed this long after its last response.
    body_timeout_s: the whole request body must arrive this long after its request starts to run (at once,
    unless it waits behind pipelined ones); else 408 and the connection closed (closed only, when the app
    already answered)."""

    header_timeout_s: float = 10.0
    max_header_bytes: int = 64 * 1024
    keep_alive_s: float = 5.0
    body_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        for name in ("header_timeout_s", "max_header_bytes", "keep_alive_s", "body_timeout_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")


def connection_limits(limits: ConnectionLimits = ConnectionLimits()) -> dict[str, Any]:
    """Keyword arguments for `uvicorn.Config(app, ..., **connection_limits())`."""
    protocol = type("LimitedHttpToolsProtocol", (LimitedHttpToolsProtocol,), {"limits": limits})
    return {"http": protocol, "timeout_keep_alive": limits.keep_alive_s}


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, plus the header deadline and size cap and the body deadline of `limits`.

    `_head_bytes` counts the bytes of the request head being received; it is None from the end of the
    headers to the end of that request's body, when the head limits do not apply. (A pipelined request's
    bytes that arrive in the same read as the previous body go uncounted: at most one read, 256 KiB, more.)
    """

    limits: ClassVar[ConnectionLimits] = ConnectionLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes: int | None = 0
        self._head_deadline: asyncio.TimerHandle | None = None
        self._body_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        self._cancel_body_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        while data:
            if self._head_bytes is None:
                super().data_received(data)
                return
            # Feed at most what the head may still take: httptools would buffer an endless header in memory.
            room = self.limits.max_header_bytes - self._head_bytes
            part, data = data[:room], data[room:]
            self._head_bytes += len(part)
            super().data_received(part)
            if self.transport.is_closing() or self.transport.get_protocol() is not self:  # refused or upgraded
                return
            if self._head_bytes is not None and self._head_bytes >= self.limits.max_header_bytes:
                self._refuse(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Request line and headers are too large.")
                return

    def on_headers_complete(self) -> None:
        self._head_bytes = None
        self._cancel_deadline()
        super().on_headers_complete()

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        """A request starts to run (at once, or after the pipelined ones before it): its body is now read."""
        super()._start_asgi_task(cycle, app)
        if cycle.more_body:  # still to come (a queued request may have had it whole already)
            self._body_deadline = self.loop.call_later(self.limits.body_timeout_s, self._on_body_timeout, cycle)

    def on_message_complete(self) -> None:
        self._cancel_body_deadline()
        super().on_message_complete()
        self._head_bytes = 0  # the next bytes start the next request
        self._await_head()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._await_head()

    def _await_head(self) -> None:
        """Start the header deadline once the connection waits for a new request: nothing in flight."""
        idle = self.cycle is None or self.cycle.response_complete
        if idle and self._head_bytes is not None and self._head_deadline is None and not self.transport.is_closing():
            self._head_deadline = self.loop.call_later(self.limits.header_timeout_s, self._on_head_timeout)

    def _cancel_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _cancel_body_deadline(self) -> None:
        if self._body_deadline is not None:
            self._body_deadline.cancel()
            self._body_deadline = None

    def _on_body_timeout(self, cycle: RequestResponseCycle) -> None:
        self._body_deadline = None
        if self.transport.is_closing() or self.transport.get_protocol() is not self:  # closed or upgraded
            return
        answered = cycle.response_started
        # The app waiting for the body gets http.disconnect now and whatever it sends is dropped.
        cycle.disconnected = True
        cycle.message_event.set()
        cycle.scope["state"][BODY_TIMED_OUT] = True
        if answered:  # the app answered early (a refusal): a second answer cannot follow
            self.transport.close()
        else:
            self._refuse(HTTPStatus.REQUEST_TIMEOUT, "The request body did not arrive in time.")

    def _on_head_timeout(self) -> None:
        self._head_deadline = None
        if self.transport.is_closing() or self.transport.get_protocol() is not self:  # closed or upgraded
            return
        if self._head_bytes:
            self._refuse(HTTPStatus.REQUEST_TIMEOUT, "The request headers did not arrive in time.")
        else:  # idle: closing quietly lets clients retry on a fresh connection
            self.transport.close()

    def _refuse(self, status: HTTPStatus, message: str) -> None:
        """Answer with xAI's error body and close: the rest of the stream cannot be parsed."""
        self._head_bytes = None
        self._cancel_deadline()
        body = json.dumps({"code": Status.INVALID_ARGUMENT.value, "error": message}).encode()
        lines = [b"HTTP/1.1 %d %s" % (status.value, status.phrase.encode())]
        lines += [name + b": " + value for name, value in self.server_state.default_headers]
        lines += [b"content-type: application/json", b"content-length: %d" % len(body), b"connection: close"]
        self.transport.write(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        self.transport.close()
