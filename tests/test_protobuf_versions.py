"""The server and xai-sdk on each protobuf major the SDK takes: 5 and 6 (trees `make protobuf-trees`
installs, laid over the venv with PYTHONPATH) and the venv's own, the newest. On each, the server's gRPC
modules import without a warning and use the gencode the SDK picked for that runtime (the same classes),
and a real server on that protobuf answers xai-sdk on that protobuf: chat, tokenize, models, a batch (its
results carry google.rpc.Status, from googleapis-common-protos) and a stored completion."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import start_server, stop_server

TREES = Path(__file__).resolve().parents[1] / ".venv-protobuf"

IMPORTS = """
import warnings
warnings.simplefilter("error")
import google.protobuf
import google.rpc.status_pb2
from xai_sdk import proto
from localxai.grpcapi import batches, collections, convert, server
major = int(google.protobuf.__version__.split(".")[0])
assert convert.chat_pb2 is proto.chat_pb2 is server.chat_pb2, (convert.chat_pb2, proto.chat_pb2)
assert convert.chat_pb2.__name__ == f"xai_sdk.proto.{'v5' if major == 5 else 'v6'}.chat_pb2", convert.chat_pb2
assert batches.batch_pb2 is proto.batch_pb2 and collections.collections_pb2 is proto.collections_pb2
print(google.protobuf.__version__)
"""

CLIENT = """
import sys, time, warnings
warnings.simplefilter("error")
from xai_sdk import Client
from xai_sdk.chat import user
client = Client(api_key="x", api_host=f"localhost:{sys.argv[1]}", timeout=60)
chat = client.chat.create(model="gemma-3-270m", max_tokens=4, temperature=0, store_messages=True)
chat.append(user("Say hi."))
answer = chat.sample()
assert answer.content and answer.usage.completion_tokens >= 1, answer
assert client.chat.get_stored_completion(answer.id)
assert client.tokenize.tokenize_text("hello world", model="gemma-3-270m")
assert [m.name for m in client.models.list_language_models()] == ["gemma-3-270m"]
batch = client.batch.create("protobuf")
request = client.chat.create(model="gemma-3-270m", max_tokens=3, batch_request_id="one")
request.append(user("Hi."))
client.batch.add(batch.batch_id, [request])
deadline = time.monotonic() + 120
while client.batch.get(batch.batch_id).state.num_pending:
    assert time.monotonic() < deadline
    time.sleep(0.3)
results = client.batch.list_batch_results(batch.batch_id)
assert [r.batch_request_id for r in results.succeeded] == ["one"], results
print("ok")
"""


@pytest.mark.parametrize("major", ["5", "6", "newest"])
def test_server_and_sdk_on_protobuf(major: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOCALXAI_", "XAI_"))}
    if major != "newest":
        tree = TREES / major
        assert (tree / ".installed").exists(), f"{tree} is missing: run `make protobuf-trees` (make test does)"
        env["PYTHONPATH"] = str(tree)
    found = subprocess.run([sys.executable, "-c", IMPORTS], env=env, capture_output=True, text=True, timeout=120)
    assert found.returncode == 0, found.stderr[-3000:]
    version = found.stdout.strip()
    assert (major == "newest" and int(version.split(".")[0]) >= 6) or version.startswith(f"{major}."), version
    server = start_server(tmp_path, "--ctx-size", "512", env={"PYTHONPATH": env.get("PYTHONPATH", "")})
    try:
        client = subprocess.run(
            [sys.executable, "-c", CLIENT, str(server.grpc_port)], env=env, capture_output=True, text=True, timeout=240
        )
        assert client.returncode == 0 and client.stdout.strip() == "ok", client.stderr[-3000:]
    finally:
        stop_server(server)
    log = server.log.read_text()
    assert "gencode" not in log.lower() and "Traceback" not in log, log[-3000:]
