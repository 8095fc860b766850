"""Images: checked by localxai, then passed upstream as data URLs (a recording upstream shows what arrives).

PNG and JPEG images are generated here with Pillow; one is served over HTTP by the test's own server.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any, ClassVar

import httpx
import pytest
from PIL import Image

from localxai.engines.upstream import UpstreamEngine
from localxai.httpapi.app import create_app
from localxai.media.fetch import FetchPolicy
from localxai.runtime import Options, Runtime
from localxai.specs import UpstreamModel
from localxai.store.store import Store, sqlite_url

from conftest import AUTH, http_server


def picture(kind: str, size: tuple[int, int] = (64, 48)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 30, 90)).save(out, format=kind)
    return out.getvalue()


PNG, JPEG, GIF = picture("PNG"), picture("JPEG"), picture("GIF")
REPLY = [
    {"choices": [{"index": 0, "delta": {"role": "assistant", "content": "A red box."}}]},
    {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    {
        "choices": [],
        "usage": {
            "prompt_tokens": 300,
            "completion_tokens": 4,
            "prompt_tokens_details": {"cached_tokens": 0, "image_tokens": 256},
        },
    },
]


class Recorder(BaseHTTPRequestHandler):
    bodies: ClassVar[list[dict[str, Any]]] = []

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        body = JPEG if self.path == "/photo.jpg" else b"ok"
        self.send_response(200 if self.path in ("/photo.jpg", "/health") else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        Recorder.bodies.append(json.loads(self.rfile.read(length)))
        payload = "".join(f"data: {json.dumps(c)}\n\n" for c in REPLY) + "data: [DONE]\n\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload.encode())


@pytest.fixture(scope="module")
def recorder() -> Iterator[str]:
    with http_server(Recorder) as url:
        yield url


def client(base: str, tmp_path: Any, allow_private: bool = True) -> httpx.AsyncClient:
    engine = UpstreamEngine([UpstreamModel(id="vision", base_urls=(base + "/v1",), upstream_model="v", vision=True)])
    policy = FetchPolicy(allow_private=allow_private, timeout_s=2)
    key = AUTH["Authorization"].split()[1]
    runtime = Runtime.build([engine], (key,), Store(sqlite_url(tmp_path)), Options(fetch_policy=policy))
    app = create_app(runtime)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t", headers=AUTH)


def data_url(data: bytes, declared: str = "image/png") -> str:
    return f"data:{declared};base64,{base64.b64encode(data).decode()}"


def image(url: str, detail: str = "auto") -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url, "detail": detail}}


def ask(*parts: dict[str, Any]) -> dict[str, Any]:
    return {"model": "vision", "messages": [{"role": "user", "content": list(parts)}]}


async def test_images_reach_the_upstream_as_checked_data_urls(recorder: str, tmp_path: Any) -> None:
    Recorder.bodies.clear()
    async with client(recorder, tmp_path) as c:
        body = ask(
            {"type": "text", "text": "Compare"},
            image(data_url(PNG), "low"),
            {"type": "text", "text": "with"},
            image(f"{recorder}/photo.jpg", "high"),
            image(data_url(JPEG, declared="image/png")),  # the declared type is not trusted: bytes decide
        )
        r = await c.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["prompt_tokens_details"]["image_tokens"] == 256
    parts = Recorder.bodies[-1]["messages"][0]["content"]
    assert [p["type"] for p in parts] == ["text", "image_url", "text", "image_url", "image_url"]
    urls = [p["image_url"]["url"] for p in parts if p["type"] == "image_url"]
    assert urls == [data_url(PNG), data_url(JPEG, "image/jpeg"), data_url(JPEG, "image/jpeg")]
    assert [p["image_url"]["detail"] for p in parts if p["type"] == "image_url"] == ["low", "high", "auto"]


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("data:image/png;base64,not base64!!", "image 1: the data URL is not valid base64"),
        (data_url(GIF, "image/gif"), "image 1: unsupported image type"),
        (data_url(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10), "image 1: the image cannot be decoded"),
        (data_url(b"\xff\xd8\xff" + b"\x00" * (20 * 1024 * 1024 - 2)), "image 1: larger than 20971520 bytes"),
        ("RECORDER/missing.png", "image 1: fetching"),
        ("ftp://example.com/a.png", "image 1: only http and https"),
    ],
)
async def test_bad_images_are_400_naming_the_image(recorder: str, tmp_path: Any, url: str, needle: str) -> None:
    async with client(recorder, tmp_path) as c:
        body = ask(image(data_url(PNG)), image(url.replace("RECORDER", recorder)))
        r = await c.post("/v1/chat/completions", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["code"] == "Client specified an invalid argument" and needle in r.json()["error"]


async def test_private_image_urls_refused_unless_allowed(recorder: str, tmp_path: Any) -> None:
    async with client(recorder, tmp_path, allow_private=False) as c:
        r = await c.post("/v1/chat/completions", json=ask(image(f"{recorder}/photo.jpg")))
    assert r.status_code == 400 and "private, loopback" in r.json()["error"]


async def test_image_failures_are_counted(recorder: str, tmp_path: Any) -> None:
    async with client(recorder, tmp_path) as c:
        assert (await c.post("/v1/chat/completions", json=ask(image(data_url(GIF))))).status_code == 400
        metrics = (await c.get("/metrics")).text
    assert 'localxai_image_fetch_failures_total{model="vision"} 1.0' in metrics
