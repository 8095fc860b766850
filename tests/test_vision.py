"""Images with the embedded engine: a tiny random Gemma 3 vision model (tests/fixtures/tiny-vision, made by
tests/fixtures/make_tiny_vision.py) through llama.cpp's mtmd inside the batching scheduler.

The model's answers are noise, so the assertions are on the pipeline: images change what the model
computes (log-probabilities), the prefix cache keys on image content, usage follows xAI's image price,
and real clients (openai over HTTP, xai-sdk over gRPC) get images through a real server process.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from PIL import Image
from xai_sdk import Client
from xai_sdk.chat import image as sdk_image
from xai_sdk.chat import user as sdk_user

from localxai.chat import Detail
from localxai.engines.llamacpp.engine import LlamaCppEngine
from localxai.engines.llamacpp.prompt import ImageChunk
from localxai.engines.llamacpp.vision import Vision
from localxai.media.fetch import FetchPolicy
from localxai.media.images import image_tokens
from localxai.specs import EmbeddedModel, EngineTuning

from conftest import API_KEY, AUTH, Server, fake_app, http_server, start_server, stop_server

FIXTURE = Path(__file__).parent / "fixtures" / "tiny-vision"
MODEL = "tiny-vision"


def picture(kind: str, color: tuple[int, int, int], size: tuple[int, int] = (64, 48)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format=kind)
    return out.getvalue()


def data_url(data: bytes) -> str:
    mime = "image/png" if data.startswith(b"\x89PNG") else "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


RED, BLUE = picture("PNG", (220, 20, 20)), picture("PNG", (20, 20, 220))
PHOTO = picture("JPEG", (30, 160, 60), (900, 500))


def part(url: str, detail: str = "auto") -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url, "detail": detail}}


def ask(*parts: dict[str, Any] | str, **extra: Any) -> dict[str, Any]:
    content = [{"type": "text", "text": p} if isinstance(p, str) else p for p in parts]
    body = {"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": 4, "seed": 5}
    return {**body, **extra}


def vision_engine(parallel: int, cache_ram_mib: int = 0) -> LlamaCppEngine:
    tuning = EngineTuning(ctx_size=1024, threads=2, parallel=parallel, cache_ram_mib=cache_ram_mib)
    return LlamaCppEngine(EmbeddedModel(MODEL, mmproj=FIXTURE / "mmproj.gguf", tuning=tuning), FIXTURE / "model.gguf")


@pytest.fixture(scope="module")
def engine() -> Iterator[LlamaCppEngine]:
    engine = vision_engine(parallel=2)
    yield engine
    asyncio.run(engine.close())


@pytest.fixture
async def client(engine: LlamaCppEngine) -> Any:
    app = fake_app(engine, fetch_policy=FetchPolicy(allow_private=True, timeout_s=2))  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t", headers=AUTH) as c:
        yield c


async def complete(c: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    r = await c.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    return dict(r.json())


def first_logprobs(answer: dict[str, Any]) -> list[float]:
    return [t["logprob"] for t in answer["choices"][0]["logprobs"]["content"][0]["top_logprobs"]]


async def test_models_list_image_input(client: httpx.AsyncClient) -> None:
    model = (await client.get(f"/v1/language-models/{MODEL}")).json()
    assert model["input_modalities"] == ["text", "image"]


async def test_the_image_reaches_the_model(client: httpx.AsyncClient) -> None:
    """Same text, different pixels: the model's distribution over the first token changes."""
    probe = {"logprobs": True, "top_logprobs": 5, "temperature": 0}
    red = first_logprobs(await complete(client, ask("What color?", part(data_url(RED)), **probe)))
    blue = first_logprobs(await complete(client, ask("What color?", part(data_url(BLUE)), **probe)))
    again = first_logprobs(await complete(client, ask("What color?", part(data_url(RED)), **probe)))
    assert red != blue
    assert red == again


@pytest.mark.parametrize(
    ("size", "detail", "tokens"),
    [
        ((64, 48), "auto", 256),  # fits one tile: the overview alone
        ((64, 48), "high", 512),  # one tile plus the overview
        ((500, 300), "auto", 768),  # 2x1 tiles plus the overview
        ((900, 500), "low", 256),
        ((900, 500), "high", 1792),  # 3x2 tiles plus the overview
        ((2000, 2000), "high", 1792),  # 5x5 tiles, capped at 6
    ],
)
async def test_image_tokens_follow_xai_price(
    client: httpx.AsyncClient, size: tuple[int, int], detail: str, tokens: int
) -> None:
    text_only = await complete(client, ask("Describe."))
    answer = await complete(client, ask("Describe.", part(data_url(picture("PNG", (9, 9, 9), size)), detail)))
    usage = answer["usage"]
    assert usage["prompt_tokens_details"]["image_tokens"] == tokens
    # The image's own begin/end markers are text tokens of the prompt, around the priced image.
    assert usage["prompt_tokens"] - tokens >= text_only["usage"]["prompt_tokens"]
    assert usage["prompt_tokens_details"]["text_tokens"] == usage["prompt_tokens"] - tokens
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


async def test_prefix_cache_keys_on_image_content(client: httpx.AsyncClient) -> None:
    """A repeated conversation reuses the image's KV; another image after the same text does not."""
    probe = {"logprobs": True, "top_logprobs": 3, "temperature": 0}
    history = ask("Look at this one please:", part(data_url(BLUE)), "and now answer.", **probe)
    first = await complete(client, history)
    again = await complete(client, history)
    usage = again["usage"]
    assert usage["prompt_tokens_details"]["cached_tokens"] == usage["prompt_tokens"] - 1  # all but the last token
    assert first_logprobs(again) == first_logprobs(first)  # cached or not, the same computation
    swapped = await complete(client, ask("Look at this one please:", part(data_url(RED)), "and now answer.", **probe))
    cached = swapped["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert 0 < cached < swapped["usage"]["prompt_tokens"] - 256  # the text before the image only
    assert first_logprobs(swapped) != first_logprobs(first)


async def test_an_image_cached_behind_other_text_is_encoded_again(client: httpx.AsyncClient) -> None:
    """The KV holds the image after other text: the engine skips encoding when preparing (the image is
    in the cache), finds it cannot reuse it, and encodes it in the scheduler instead."""
    probe = {"logprobs": True, "top_logprobs": 3, "temperature": 0}
    await complete(client, ask("First text", part(data_url(PHOTO)), "end", **probe))
    moved = await complete(client, ask("Other words", part(data_url(PHOTO)), "end", **probe))
    again = await complete(client, ask("Other words", part(data_url(PHOTO)), "end", **probe))
    assert moved["usage"]["prompt_tokens_details"]["cached_tokens"] < 1792
    assert first_logprobs(moved) == first_logprobs(again)


async def test_several_images_in_any_order_with_streaming_and_n(client: httpx.AsyncClient) -> None:
    body = ask(part(data_url(RED), "low"), "between", part(data_url(PHOTO), "high"), part(data_url(BLUE)), "?")
    body.update(stream=True, stream_options={"include_usage": True}, n=2)
    async with client.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        lines = [line async for line in r.aiter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    finished = {c["choices"][0]["index"] for c in chunks if c["choices"] and c["choices"][0].get("finish_reason")}
    assert finished == {0, 1}
    usage = chunks[-1]["usage"]
    assert usage["prompt_tokens_details"]["image_tokens"] == 256 + 1792 + 256
    assert usage["completion_tokens"] <= 2 * 4


async def test_bad_images_are_refused_before_the_engine(client: httpx.AsyncClient) -> None:
    gif = picture("GIF", (1, 2, 3))
    r = await client.post("/v1/chat/completions", json=ask("a", part(data_url(RED)), part(data_url(gif))))
    assert r.status_code == 400
    assert "image 1: unsupported image type" in r.json()["error"]


def test_context_length_counts_the_positions_images_take(engine: LlamaCppEngine) -> None:
    """Over the context with images: a clean 400 before any output, not a truncated prompt."""
    app = fake_app(engine)  # type: ignore[arg-type]

    async def run() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t", headers=AUTH) as c:
            return await c.post("/v1/chat/completions", json=ask("x " * 1020, part(data_url(RED))))

    r = asyncio.run(run())
    assert r.status_code == 400
    assert "This model's maximum prompt length is 1023 but the request contains" in r.json()["error"]


class Images(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        body = {"/photo.jpg": PHOTO, "/red.png": RED}.get(self.path)
        self.send_response(200 if body else 404)
        self.send_header("Content-Length", str(len(body or b"")))
        self.end_headers()
        self.wfile.write(body or b"")


@pytest.fixture(scope="module")
def image_host() -> Iterator[str]:
    with http_server(Images) as url:
        yield url


@pytest.fixture(scope="module")
def vision_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(
        tmp_path_factory.mktemp("vision"),
        "--model", str(FIXTURE / "model.gguf"),
        "--mmproj", str(FIXTURE / "mmproj.gguf"),
        "--model-id", MODEL,
        "--api-key", API_KEY,
        "--ctx-size", "1024",
        "--allow-private-image-urls",
    )  # fmt: skip
    yield server
    stop_server(server)


def test_openai_client_sends_data_and_http_images(vision_server: Server, image_host: str) -> None:
    oai = openai.OpenAI(api_key=API_KEY, base_url=vision_server.v1, max_retries=0, timeout=60)
    content: Any = [
        {"type": "text", "text": "Compare"},
        {"type": "image_url", "image_url": {"url": data_url(RED), "detail": "low"}},
        {"type": "image_url", "image_url": {"url": f"{image_host}/photo.jpg", "detail": "high"}},
    ]
    c = oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": content}], max_tokens=4)
    assert c.usage is not None and c.usage.prompt_tokens_details is not None
    assert c.usage.prompt_tokens_details.image_tokens == 256 + 1792
    stream = oai.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": content}],
        max_tokens=4,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == c.usage.prompt_tokens
    with pytest.raises(openai.BadRequestError) as refused:
        bad = [{"type": "image_url", "image_url": {"url": f"{image_host}/missing.png"}}]
        oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": bad}], max_tokens=4)
    assert "image 0: fetching" in refused.value.response.json()["error"]


def test_xai_sdk_sends_images_over_grpc(vision_server: Server, image_host: str) -> None:
    client = Client(api_key=API_KEY, api_host=f"localhost:{vision_server.grpc_port}", timeout=60)
    chat = client.chat.create(model=MODEL, max_tokens=4)
    chat.append(
        sdk_user("What is in these?", sdk_image(data_url(BLUE), detail="high"), sdk_image(f"{image_host}/red.png"))
    )
    response = chat.sample()
    assert response.usage.prompt_image_tokens == 512 + 256
    assert response.usage.prompt_tokens > response.usage.prompt_image_tokens


@pytest.mark.parametrize(
    ("width", "height", "detail", "tokens"),
    [
        (448, 448, Detail.AUTO, 256),
        (449, 448, Detail.AUTO, 768),
        (448, 448, Detail.HIGH, 512),
        (10_000, 10, Detail.HIGH, 1792),
        (10_000, 10, Detail.LOW, 256),
    ],
)
def test_xai_image_price(width: int, height: int, detail: Detail, tokens: int) -> None:
    assert image_tokens(width, height, detail) == tokens


def test_responses_api_with_images(vision_server: Server, image_host: str) -> None:
    """input_image parts (a data URL and an http URL, as strings) take the checked image path; a bad
    image is refused before anything runs."""
    oai = openai.OpenAI(api_key=API_KEY, base_url=vision_server.v1, max_retries=0, timeout=60)
    content: Any = [
        {"type": "input_text", "text": "Compare"},
        {"type": "input_image", "image_url": data_url(RED), "detail": "low"},
        {"type": "input_image", "image_url": f"{image_host}/photo.jpg", "detail": "high"},
    ]
    r = oai.responses.create(model=MODEL, input=[{"role": "user", "content": content}], max_output_tokens=4)
    assert r.usage is not None and r.usage.input_tokens > 256 + 1792
    follow = oai.responses.create(model=MODEL, previous_response_id=r.id, input="And now?", max_output_tokens=4)
    assert follow.usage is not None and follow.usage.input_tokens_details.cached_tokens > 0  # images reused
    bad = [{"type": "input_image", "image_url": "data:image/png;base64,bm90IGFuIGltYWdl"}]
    with pytest.raises(openai.BadRequestError) as refused:
        oai.responses.create(model=MODEL, input=[{"role": "user", "content": bad}])
    assert "image 0" in refused.value.response.json()["error"]


async def test_a_conversation_with_an_image_is_restored_from_host_memory() -> None:
    """Evicted from its only slot, the image's KV comes back from host memory: the same distribution,
    and the image (all but the last prompt token) counted as cached."""
    engine = vision_engine(parallel=1, cache_ram_mib=64)
    try:
        app = fake_app(engine)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t", headers=AUTH) as c:
            probe = {"logprobs": True, "top_logprobs": 5, "temperature": 0}
            question = "Describe the colour of this picture in detail. " * 8  # a state worth keeping: 64+ positions
            first = await complete(c, ask(question, part(data_url(RED)), **probe))
            await complete(c, ask("Something else entirely, " * 30))  # takes the slot
            again = await complete(c, ask(question, part(data_url(RED)), **probe))
        # The same distribution, up to the last bits: restored cells lie elsewhere in the KV cache,
        # which changes the order of flash attention's sums (docs/engine.md, Determinism).
        assert first_logprobs(again) == pytest.approx(first_logprobs(first), abs=0.05)
        usage = again["usage"]
        details = usage["prompt_tokens_details"]
        assert engine.stats()[MODEL].get("host_cache_restores") == 1, engine.stats()
        assert details["cached_tokens"] == usage["prompt_tokens"] - 1 and details["image_tokens"] > 0
    finally:
        await engine.close()


async def test_the_vision_tower_runs_on_the_scheduler_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every llama.cpp computation happens on one thread: its OpenMP threads belong to the thread that
    computes, and one image encoded on another thread made every later text step slower (1.5 ms
    instead of 0.05 ms per one-token step with this model; 16.6 instead of 10.8 ms with the default)."""
    threads: list[str] = []
    encode = Vision.encode

    def recorded(self: Vision, image: ImageChunk) -> None:
        threads.append(threading.current_thread().name)
        encode(self, image)

    monkeypatch.setattr(Vision, "encode", recorded)
    engine = vision_engine(parallel=2)
    try:
        app = fake_app(engine)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t", headers=AUTH) as c:
            await complete(c, ask("What is this?", part(data_url(RED)), max_tokens=2))
            await complete(c, ask("And this?", part(data_url(BLUE)), max_tokens=2))
    finally:
        await engine.close()
    assert threads and set(threads) == {"llamacpp-scheduler"}, threads
