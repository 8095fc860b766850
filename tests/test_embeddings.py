"""Embeddings through a real server: the bundled default model and a GGUF through llama.cpp's embedding
mode, over REST (the OpenAI SDK, httpx) and gRPC (Embedder.Embed, the SDK's model lists)."""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator

import grpc
import httpx
import numpy as np
import openai
import pytest
from xai_sdk import Client
from xai_sdk.proto import embed_pb2, embed_pb2_grpc

from localxai.embeddings import DEFAULT_EMBEDDING_MODEL, MAX_INPUT_TOKENS
from localxai.engines.llamacpp.default_model import default_model_path

from conftest import API_KEY, Server, start_server, stop_server

DOCS = [
    "The cat slept on the warm windowsill all afternoon.",
    "Quarterly revenue grew by twelve percent thanks to cloud sales.",
    "To bake bread, mix flour, water, salt and yeast, then let the dough rise.",
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    gguf = default_model_path(tmp_path_factory.mktemp("gguf"))
    running = start_server(
        tmp_path_factory.mktemp("embeddings"), "--api-key", API_KEY, "--ctx-size", "1024",
        "--embedding-model", f"gemma-embed={gguf}",
    )  # fmt: skip
    yield running
    stop_server(running)


def oai(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.v1, api_key=API_KEY, max_retries=0)


def test_openai_sdk_embeds_and_similar_texts_are_near(server: Server) -> None:
    client = oai(server)
    done = client.embeddings.create(model=DEFAULT_EMBEDDING_MODEL, input=DOCS)  # the SDK asks for base64
    vectors = np.array([d.embedding for d in done.data])
    assert vectors.shape == (3, 256) and [d.index for d in done.data] == [0, 1, 2]
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert done.usage.prompt_tokens == done.usage.total_tokens > 20
    query = client.embeddings.create(model=DEFAULT_EMBEDDING_MODEL, input="kitten napping in the sun")
    scores = vectors @ np.array(query.data[0].embedding)
    assert int(np.argmax(scores)) == 0, scores
    floats = client.embeddings.create(model=DEFAULT_EMBEDDING_MODEL, input=DOCS[0], encoding_format="float")
    assert np.allclose(floats.data[0].embedding, vectors[0], atol=1e-6)  # base64 and float say the same
    short = client.embeddings.create(model=DEFAULT_EMBEDDING_MODEL, input=DOCS[0], dimensions=64)
    head = vectors[0][:64] / np.linalg.norm(vectors[0][:64])
    assert len(short.data[0].embedding) == 64 and np.allclose(short.data[0].embedding, head, atol=1e-5)


def test_a_gguf_model_through_llama_cpp(server: Server) -> None:
    client = oai(server)
    done = client.embeddings.create(model="gemma-embed", input=DOCS, encoding_format="float")
    vectors = np.array([d.embedding for d in done.data])
    assert vectors.shape == (3, 640) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
    again = client.embeddings.create(model="gemma-embed", input=DOCS[1], encoding_format="float")
    assert np.allclose(again.data[0].embedding, vectors[1], atol=1e-4)  # batched or alone: the same vector
    assert done.usage.prompt_tokens > 20


def test_bad_input_gets_clear_errors(server: Server) -> None:
    api = httpx.Client(base_url=server.v1, headers={"Authorization": f"Bearer {API_KEY}"})
    for body, status, needle in (
        ({"model": "nope", "input": "x"}, 404, "wordllama-l2-supercat"),
        ({"model": DEFAULT_EMBEDDING_MODEL, "input": []}, 400, "at least one"),
        ({"model": DEFAULT_EMBEDDING_MODEL, "input": ["ok", ""]}, 400, "input[1] is empty"),
        ({"model": DEFAULT_EMBEDDING_MODEL, "input": [1, 2, 3]}, 400, "token arrays"),
        ({"model": DEFAULT_EMBEDDING_MODEL, "input": "x", "dimensions": 100}, 400, "64, 128, 256"),
        ({"model": DEFAULT_EMBEDDING_MODEL, "input": "x", "encoding_format": "int8"}, 400, "encoding_format"),
        ({"model": DEFAULT_EMBEDDING_MODEL, "input": ["x"] * 2049}, 400, "at most 2048"),
        ({"model": DEFAULT_EMBEDDING_MODEL, "input": "word " * (MAX_INPUT_TOKENS + 10)}, 400, "tokens"),
        ({"input": "x"}, 400, "model"),
    ):
        answer = api.post("/embeddings", json=body)
        assert answer.status_code in (status, 422 if status == 400 else status), (body, answer.text)
        assert needle in answer.text, (body, answer.text)
        assert "Traceback" not in answer.text
    assert api.post("/embeddings", content=b"input=x").status_code == 415


def test_model_lists_tell_the_truth(server: Server) -> None:
    api = httpx.Client(base_url=server.v1, headers={"Authorization": f"Bearer {API_KEY}"})
    listed = api.get("/embedding-models").json()["models"]
    assert [m["id"] for m in listed] == [DEFAULT_EMBEDDING_MODEL, "gemma-embed"]
    assert api.get(f"/embedding-models/{DEFAULT_EMBEDDING_MODEL}").json()["dimensions"] == [64, 128, 256]
    assert api.get("/embedding-models/nope").status_code == 404
    assert api.get("/image-generation-models").json() == {"models": []}
    assert api.get("/video-generation-models").json() == {"models": []}
    assert api.get("/image-generation-models/grok-imagine-image").status_code == 404
    client = Client(api_key=API_KEY, api_host=f"localhost:{server.grpc_port}", timeout=60)
    assert [m.name for m in client.models.list_embedding_models()] == [DEFAULT_EMBEDDING_MODEL, "gemma-embed"]
    assert client.models.get_embedding_model("gemma-embed").name == "gemma-embed"
    assert list(client.models.list_image_generation_models()) == []


def test_grpc_embedder(server: Server) -> None:
    channel = grpc.insecure_channel(f"localhost:{server.grpc_port}")
    stub = embed_pb2_grpc.EmbedderStub(channel)
    metadata = (("authorization", f"Bearer {API_KEY}"),)
    inputs = [embed_pb2.EmbedInput(string=d) for d in DOCS]
    floats = stub.Embed(embed_pb2.EmbedRequest(input=inputs, model=DEFAULT_EMBEDDING_MODEL), metadata=metadata)
    assert [e.index for e in floats.embeddings] == [0, 1, 2] and floats.usage.num_text_embeddings == 3
    packed = stub.Embed(
        embed_pb2.EmbedRequest(input=inputs, model=DEFAULT_EMBEDDING_MODEL, encoding_format=embed_pb2.FORMAT_BASE64),
        metadata=metadata,
    )
    decoded = np.frombuffer(base64.b64decode(packed.embeddings[2].embeddings[0].base64_array), dtype="<f4")
    assert np.allclose(decoded, floats.embeddings[2].embeddings[0].float_array, atol=1e-6)
    with pytest.raises(grpc.RpcError) as missing:
        stub.Embed(embed_pb2.EmbedRequest(input=inputs, model="nope"), metadata=metadata)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    image = embed_pb2.EmbedInput(image_url={"image_url": "https://example.com/a.png"})
    with pytest.raises(grpc.RpcError) as refused:
        stub.Embed(embed_pb2.EmbedRequest(input=[image], model=DEFAULT_EMBEDDING_MODEL), metadata=metadata)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    channel.close()


def test_the_default_model_leaves_logging_alone() -> None:
    """wordllama configures the root logger at import; the embedder takes that back (a subprocess: fresh
    imports), or `localxai chat` shows every request's log line in the conversation."""
    import subprocess
    import sys

    code = (
        "import logging; from localxai.embeddings import WordLlamaEmbedder; WordLlamaEmbedder(); "
        "root = logging.getLogger(); print(root.level, len(root.handlers))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.split() == [str(logging.WARNING), "0"]
