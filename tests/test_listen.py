"""A taken port fails at once, before the model loads, naming the flag that changes it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from conftest import Server, free_port


def serve(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCALXAI_")}
    command = [sys.executable, "-m", "localxai", "serve", "--data-dir", str(tmp_path), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)


def test_taken_http_port(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = serve(tmp_path, "--port", str(port), "--grpc-port", "0")
    assert done.returncode != 0
    assert f"port {port}: it is already in use" in done.stderr
    assert '--port N (with make: make serve ARGS="--port N")' in done.stderr
    assert "serving model" not in done.stderr  # before the model loads


def test_second_server_on_the_same_grpc_port_fails(real_server: Server, tmp_path: Path) -> None:
    """grpc's SO_REUSEPORT used to let both servers bind and split the clients between them."""
    done = serve(tmp_path, "--port", str(free_port()), "--grpc-port", str(real_server.grpc_port))
    assert done.returncode != 0
    assert f"port {real_server.grpc_port}: it is already in use" in done.stderr
    assert "--grpc-port N" in done.stderr
    assert "serving model" not in done.stderr
    assert real_server.process.poll() is None
