"""The Batch API through a real server with the real model, on SQLite and PostgreSQL: xai-sdk's
`client.batch` on gRPC, httpx (and the Files API for JSONL input) on REST, one store for both; the bad
input xAI refuses, and a bad request failing alone."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest
from xai_sdk import Client
from xai_sdk.chat import system, user

from conftest import API_KEY, Server, private_database, start_server, stop_server

OTHER_KEY = "xai-batches-other-key-000"
MODEL = "gemma-3-270m"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp(f"batches-{request.param}")
    with private_database(request.param, tmp) as url:
        running = start_server(
            tmp, "--api-key", API_KEY, "--api-key", OTHER_KEY, "--ctx-size", "1024", "--database-url", url
        )
        yield running
        stop_server(running)


def api(server: Server, key: str = API_KEY) -> httpx.Client:
    return httpx.Client(base_url=server.v1, headers={"Authorization": f"Bearer {key}"}, timeout=60)


def xai(server: Server) -> Client:
    return Client(api_key=API_KEY, api_host=f"localhost:{server.grpc_port}", timeout=60)


def chat_body(content: str, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": 6, **extra}


def wait_done(client: httpx.Client, batch_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        batch = client.get(f"/batches/{batch_id}").json()
        if batch["state"]["num_pending"] == 0:
            return dict(batch)
        assert time.monotonic() < deadline, batch
        time.sleep(0.2)


def test_xai_sdk_batch_end_to_end(server: Server) -> None:
    client = xai(server)
    batch = client.batch.create("capitals")
    assert batch.batch_id.startswith("batch_") and batch.name == "capitals"
    chats = []
    for country in ("France", "Spain", "Italy"):
        chat = client.chat.create(model=MODEL, max_tokens=8, temperature=0, batch_request_id=f"capital_{country}")
        chat.append(system("Answer in one word."))
        chat.append(user(f"What is the capital of {country}?"))
        chats.append(chat)
    client.batch.add(batch_id=batch.batch_id, batch_requests=chats)
    deadline = time.monotonic() + 120
    while (got := client.batch.get(batch.batch_id)).state.num_pending:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert (got.state.num_requests, got.state.num_success, got.state.num_error) == (3, 3, 0)
    assert batch.batch_id in [b.batch_id for b in client.batch.list(limit=100).batches]
    listed = client.batch.list_batch_requests(batch.batch_id)
    assert [m.batch_request_id for m in listed.batch_request_metadata] == [
        f"capital_{c}" for c in ("France", "Spain", "Italy")
    ]
    assert {m.model for m in listed.batch_request_metadata} == {MODEL}
    results = client.batch.list_batch_results(batch.batch_id)
    assert len(results.succeeded) == 3 and not results.failed
    for result in results.succeeded:
        assert result.response.content and result.response.usage.completion_tokens >= 1
    # Each result is the same as the live request gives (greedy).
    live = client.chat.create(model=MODEL, max_tokens=8, temperature=0)
    live.append(system("Answer in one word."))
    live.append(user("What is the capital of France?"))
    by_id = {r.batch_request_id: r.response.content for r in results.results}
    assert by_id["capital_France"] == live.sample().content
    # Paging: one at a time, in the order they were added, every one once.
    seen, token = [], None
    while True:
        page = client.batch.list_batch_results(batch.batch_id, limit=1, pagination_token=token)
        seen += [r.batch_request_id for r in page.results]
        if not (token := page.pagination_token):
            break
    assert seen == [f"capital_{c}" for c in ("France", "Spain", "Italy")]
    # Cancelling a finished batch marks it; a second cancel is refused.
    assert client.batch.cancel(batch.batch_id).cancel_time.seconds > 0
    with pytest.raises(grpc.RpcError) as twice:
        client.batch.cancel(batch.batch_id)
    assert twice.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_grpc_refuses_foreign_and_unknown_batches(server: Server) -> None:
    mine = api(server).post("/batches", json={"name": "mine"}).json()["batch_id"]
    other = Client(api_key=OTHER_KEY, api_host=f"localhost:{server.grpc_port}", timeout=60)
    for call in (
        lambda: other.batch.get(mine),
        lambda: other.batch.cancel(mine),
        lambda: other.batch.list_batch_results(mine),
        lambda: xai(server).batch.get("batch_nope"),
    ):
        with pytest.raises(grpc.RpcError) as missing:
            call()
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND


def test_rest_add_list_results_and_a_bad_request_failing_alone(server: Server) -> None:
    client = api(server)
    batch_id = client.post("/batches", json={"name": "rest"}).json()["batch_id"]
    added = client.post(
        f"/batches/{batch_id}/requests",
        json={
            "batch_requests": [
                {"batch_request_id": "good", "batch_request": {"chat_get_completion": chat_body("Say hi")}},
                {
                    "batch_request_id": "no-model",
                    "batch_request": {"chat_get_completion": chat_body("x", model="nope")},
                },
                {"batch_request_id": "bad-body", "batch_request": {"chat_get_completion": {"model": MODEL}}},
                {"batch_request_id": "image", "batch_request": {"image_generate": {"prompt": "a cat"}}},
                {"batch_request": {"chat_get_completion": chat_body("Unnamed")}},
            ]
        },
    )
    assert added.status_code == 200 and added.json() == {}
    batch = wait_done(client, batch_id)
    assert batch["state"] == {
        "num_requests": 5, "num_pending": 0, "num_success": 2, "num_error": 3, "num_cancelled": 0,
    }  # fmt: skip
    assert batch["create_time"].endswith("Z") and batch["cancel_time"] is None
    results = client.get(f"/batches/{batch_id}/results", params={"limit": 100}).json()
    assert results["pagination_token"] is None
    by_id = {r["batch_request_id"]: r for r in results["results"]}
    assert len(by_id) == 5
    good = by_id["good"]["batch_result"]["response"]["chat_get_completion"]
    assert good["object"] == "chat.completion" and good["choices"][0]["message"]["content"]
    assert by_id["no-model"]["batch_result"]["error"]["code"] == 5  # NOT_FOUND
    assert "nope" in by_id["no-model"]["error_message"]
    assert by_id["bad-body"]["batch_result"]["error"]["code"] == 3
    assert "messages" in by_id["bad-body"]["error_message"]
    assert "image_generate" in by_id["image"]["error_message"]
    unnamed = [i for i in by_id if i.startswith("req_")]
    assert len(unnamed) == 1 and "response" in by_id[unnamed[0]]["batch_result"]
    metadata = client.get(f"/batches/{batch_id}/requests", params={"state": "failed"}).json()
    assert {m["batch_request_id"] for m in metadata["batch_request_metadata"]} == {"no-model", "bad-body", "image"}
    assert all(m["state"] == "failed" and m["finish_time"] for m in metadata["batch_request_metadata"])
    # xAI's docs page with page_size, its SDK with limit: both work.
    first = client.get(f"/batches/{batch_id}/requests", params={"page_size": 2}).json()
    assert len(first["batch_request_metadata"]) == 2 and first["pagination_token"]
    rest = client.get(
        f"/batches/{batch_id}/requests", params={"limit": 10, "pagination_token": first["pagination_token"]}
    )
    assert len(rest.json()["batch_request_metadata"]) == 3


def test_rest_bad_input_gets_xai_errors(server: Server) -> None:
    client = api(server)
    batch_id = client.post("/batches", json={"name": "errors"}).json()["batch_id"]
    one = {"batch_request_id": "a", "batch_request": {"chat_get_completion": chat_body("hi")}}
    assert client.post(f"/batches/{batch_id}/requests", json={"batch_requests": [one, one]}).status_code == 400
    assert client.post(f"/batches/{batch_id}/requests", json={"requests": []}).status_code == 400
    assert (
        client.post(
            f"/batches/{batch_id}/requests", content=b"{", headers={"content-type": "application/json"}
        ).status_code
        == 400
    )
    assert client.post(f"/batches/{batch_id}/requests", json={"batch_requests": [one]}).status_code == 200
    again = client.post(f"/batches/{batch_id}/requests", json={"batch_requests": [one]})
    assert again.status_code == 400 and "already has a request" in again.json()["error"]
    # Over 25 MB in one add call: 413, nothing added.
    huge = {"batch_requests": [{"batch_request": {"chat_get_completion": chat_body("x" * (26 * 1024 * 1024))}}]}
    too_big = client.post(f"/batches/{batch_id}/requests", json=huge)
    assert too_big.status_code == 413
    assert client.get(f"/batches/{batch_id}").json()["state"]["num_requests"] == 1
    # Another key's batch does not exist for it; unknown ids are 404 too.
    other = api(server, OTHER_KEY)
    assert other.get(f"/batches/{batch_id}").status_code == 404
    assert other.post(f"/batches/{batch_id}/requests", json={"batch_requests": [one]}).status_code == 404
    assert other.post(f"/batches/{batch_id}:cancel").status_code == 404
    assert batch_id not in [b["batch_id"] for b in other.get("/batches").json()["batches"]]
    assert client.get("/batches/batch_unknown/results").status_code == 404
    assert client.get(f"/batches/{batch_id}/results", params={"pagination_token": "x'; --"}).status_code == 400
    assert client.get("/batches", params={"limit": 0}).status_code == 200
    assert client.get("/batches", params={"limit": 5000}).status_code == 400
    # Cancel: the pending request is cancelled, a second cancel is refused, nothing more can be added.
    cancelled = client.post(f"/batches/{batch_id}:cancel")
    assert cancelled.status_code == 200 and cancelled.json()["cancel_time"]
    state = cancelled.json()["state"]
    assert state["num_requests"] == state["num_success"] + state["num_cancelled"] == 1
    twice = client.post(f"/batches/{batch_id}:cancel")
    assert twice.status_code == 400 and twice.json()["code"] == "Client specified an invalid argument"
    late = {"batch_requests": [{"batch_request_id": "b", "batch_request": {"chat_get_completion": chat_body("hi")}}]}
    assert client.post(f"/batches/{batch_id}/requests", json=late).status_code == 400


def test_jsonl_input_file_mixes_endpoints_and_fails_only_bad_lines(server: Server) -> None:
    client = api(server)
    lines = [
        {"custom_id": "chat", "method": "POST", "url": "/v1/chat/completions", "body": chat_body("Say hi")},
        {"custom_id": "resp", "method": "POST", "url": "/v1/responses",
         "body": {"model": MODEL, "input": "Say hello", "instructions": "Be brief.", "max_output_tokens": 6}},
        {"custom_id": "where", "method": "POST", "url": "/v1/embeddings", "body": {"model": MODEL, "input": "x"}},
        {"custom_id": "tools", "method": "POST", "url": "/v1/responses",
         "body": {"model": MODEL, "input": "x", "tools": [{"type": "web_search"}]}},
    ]  # fmt: skip
    text = (
        "\n".join(json.dumps(line) for line in lines[:2])
        + "\nnot json at all\n\n"
        + "\n".join(json.dumps(line) for line in lines[2:])
    )
    file_id = client.post("/files", files={"file": ("batch.jsonl", text.encode())}).json()["id"]
    made = client.post("/batches", json={"name": "from-file", "input_file_id": file_id})
    assert made.status_code == 200, made.text
    batch = made.json()
    assert batch["input_file_id"] == file_id and batch["state"]["num_requests"] == 5
    batch = wait_done(client, batch["batch_id"])
    assert (batch["state"]["num_success"], batch["state"]["num_error"]) == (2, 3)
    results = {r["batch_request_id"]: r for r in client.get(f"/batches/{batch['batch_id']}/results").json()["results"]}
    # Results are chat completions, also for /v1/responses lines (as xAI returns them).
    answer = results["resp"]["batch_result"]["response"]["chat_get_completion"]
    assert answer["object"] == "chat.completion" and answer["choices"][0]["message"]["content"]
    assert "line 3" in results["line-3"]["error_message"].lower()
    assert "/v1/embeddings" in results["where"]["error_message"]
    assert "Server-side tools" in results["tools"]["error_message"]
    # A batch made from a file is sealed.
    sealed = {"batch_requests": [{"batch_request": {"chat_get_completion": chat_body("hi")}}]}
    assert client.post(f"/batches/{batch['batch_id']}/requests", json=sealed).status_code == 400
    # Another key's file cannot be a batch's input.
    assert api(server, OTHER_KEY).post("/batches", json={"name": "x", "input_file_id": file_id}).status_code == 404
