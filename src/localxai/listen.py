"""Listening addresses: checked before the model loads, so a taken port fails at once, naming the flag.

The HTTP socket is bound here and handed to uvicorn. gRPC binds its own sockets, with SO_REUSEPORT
off (grpc turns it on by default, which lets a second server share the port and take half of the
clients); its port is probed here first.
"""

from __future__ import annotations

import errno
import socket

from localxai.errors import ConfigError
from localxai.settings import LOOPBACK_HOSTS


def grpc_addresses(host: str) -> list[str]:
    """Where gRPC listens. The SDK connects to "localhost:PORT", which may resolve to ::1 or
    127.0.0.1: on loopback, listen on both."""
    if host in LOOPBACK_HOSTS:
        return ["127.0.0.1", "::1"]
    return [host]


def bind_http(host: str, port: int) -> socket.socket:
    """The HTTP listening socket, bound now; ConfigError naming --port when it is taken."""
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        # IPv4 first: "localhost" often resolves to ::1 first, and clients of 127.0.0.1 must reach it.
        family, kind, proto, _, address = sorted(found, key=lambda info: info[0] != socket.AF_INET)[0]
    except socket.gaierror as exc:
        raise ConfigError(f"cannot listen on {host!r}: {exc.strerror} (--host)") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT only, not a live listener
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ConfigError(_taken(host, port, "--port", exc)) from None
    sock.set_inheritable(True)
    return sock


def check_grpc_port(host: str, port: int) -> None:
    """ConfigError naming --grpc-port when another process listens there."""
    for address in grpc_addresses(host):
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((address, port))
            except OSError as exc:
                if exc.errno == errno.EADDRNOTAVAIL:  # no such interface here (no IPv6): gRPC skips it too
                    continue
                raise ConfigError(_taken(address, port, "--grpc-port", exc)) from None


def _taken(host: str, port: int, flag: str, exc: OSError) -> str:
    reason = "it is already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
    return (
        f"cannot listen on {host} port {port}: {reason}. Choose another port with {flag} N "
        f'(with make: make serve ARGS="{flag} N")' + ("; 0 turns gRPC off" if flag == "--grpc-port" else "") + "."
    )
