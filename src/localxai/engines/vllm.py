"""`localxai serve --engine vllm`: start `vllm serve` as a managed child process and route to it.

For GPU machines with vLLM installed. The child listens on loopback with a random API key, so only
this server reaches it; it is stopped with the server. For multi-node or existing deployments, run
vLLM yourself and list it in a config file instead (docs/scaling.md).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence

import httpx

from localxai.engines.upstream import UpstreamEngine
from localxai.errors import ConfigError
from localxai.specs import UpstreamModel

log = logging.getLogger(__name__)


class ManagedVllmEngine(UpstreamEngine):
    def __init__(
        self,
        model: str,
        served_id: str,
        tensor_parallel_size: int = 1,
        extra_args: Sequence[str] = (),
        startup_timeout_s: float = 1800.0,
        context_length: int = 8192,
    ) -> None:
        executable = shutil.which("vllm")
        if executable is None:
            raise ConfigError("--engine vllm needs vLLM: pip install vllm (on a machine with a supported GPU)")
        port = _free_port()
        key = secrets.token_urlsafe(24)
        command = [
            executable, "serve", model, "--host", "127.0.0.1", "--port", str(port), "--api-key", key,
            "--served-model-name", served_id, "--tensor-parallel-size", str(tensor_parallel_size), *extra_args,
        ]  # fmt: skip
        log.info("starting vLLM: %s", " ".join(c if c != key else "***" for c in command))
        self._process = subprocess.Popen(command)
        base = f"http://127.0.0.1:{port}"
        _wait_until_healthy(self._process, base, startup_timeout_s)
        super().__init__(
            [
                UpstreamModel(
                    id=served_id,
                    base_urls=(base + "/v1",),
                    upstream_model=served_id,
                    api_key=key,
                    context_length=context_length,
                )
            ]
        )

    def halt(self) -> None:
        self._process.terminate()  # never leave a GPU-holding child behind

    async def close(self) -> None:
        await super().close()
        self._process.terminate()
        try:  # off the event loop: vLLM can take a while to release its GPUs
            await asyncio.to_thread(self._process.wait, 60)
        except subprocess.TimeoutExpired:
            self._process.kill()


def _wait_until_healthy(process: subprocess.Popen[bytes], base: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ConfigError(f"vllm serve exited with code {process.returncode} before it was ready")
        try:
            if httpx.get(base + "/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(1)
    process.terminate()
    raise ConfigError(f"vllm serve was not ready after {timeout_s:.0f} s")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
