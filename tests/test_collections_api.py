"""Collections on the wire, through a real server on SQLite and PostgreSQL: xai-sdk's `client.collections`
(management channel pointed at the server) and `collections.search`, and the REST routes with httpx;
retrieval quality on a small document set (the right document first in every mode), ownership and errors."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta

import grpc
import httpx
import pytest
from xai_sdk import Client
from xai_sdk.proto import collections_pb2

from conftest import API_KEY, Server, private_database, start_server, stop_server

OTHER_KEY = "xai-collections-other-0000"
DOCS = {
    "bread.md": "# Baking\n\nTo bake bread, knead flour, water, salt and yeast, then let the dough rise for two "
    "hours before baking it in a hot oven.",
    "cats.txt": "The kitten sleeps on the sunny windowsill for most of the afternoon, purring quietly.",
    "tax.txt": "Quarterly revenue rose twelve percent; the company paid its corporate taxes in March.",
    "trains.txt": "The night train to Vienna leaves platform four at eleven and arrives before breakfast.",
}
QUERIES = (
    ("keyword", "dough yeast oven", "bread.md"),
    ("semantic", "a cat napping in the sun", "cats.txt"),
    ("hybrid", "corporate taxes and revenue", "tax.txt"),
    ("hybrid", "overnight rail journey", "trains.txt"),
)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    args = ["--api-key", API_KEY, "--api-key", OTHER_KEY, "--ctx-size", "1024"]
    tmp = tmp_path_factory.mktemp(f"collections-{request.param}")
    with private_database(request.param, tmp) as url:
        running = start_server(tmp, *args, "--database-url", url)
        yield running
        stop_server(running)


def xai(server: Server, key: str = API_KEY) -> Client:
    host = f"localhost:{server.grpc_port}"
    return Client(api_key=key, api_host=host, management_api_key=key, management_api_host=host, timeout=60)


def test_xai_sdk_collections_end_to_end(server: Server) -> None:
    client = xai(server)
    made = client.collections.create("notes", description="test documents")
    assert made.collection_id.startswith("collection_") and made.collection_name == "notes"
    assert made.index_configuration.model_name == "wordllama-l2-supercat"
    ids = {}
    for name, text in DOCS.items():
        document = client.collections.upload_document(
            made.collection_id, name, text.encode(), wait_for_indexing=True, poll_interval=timedelta(milliseconds=100)
        )
        assert document.status == collections_pb2.DOCUMENT_STATUS_PROCESSED and document.chunk_count == 1
        ids[name] = document.file_metadata.file_id
    assert client.collections.get(made.collection_id).documents_count == 4
    listed = client.collections.list_documents(made.collection_id, limit=10)
    assert {d.file_metadata.name for d in listed.documents} == set(DOCS)
    for mode, query, expected in QUERIES:
        matches = client.collections.search(query, [made.collection_id], limit=3, retrieval_mode=mode).matches
        assert matches[0].file_id == ids[expected], (mode, query, [m.file_id for m in matches])
        assert matches[0].collection_ids == [made.collection_id] and matches[0].chunk_content
    batch = client.collections.batch_get_documents(made.collection_id, [ids["cats.txt"], ids["tax.txt"]])
    assert {d.file_metadata.file_id for d in batch.documents} == {ids["cats.txt"], ids["tax.txt"]}
    client.collections.update_document(made.collection_id, ids["cats.txt"], fields={"topic": "pets"})
    assert dict(client.collections.get_document(ids["cats.txt"], made.collection_id).fields) == {"topic": "pets"}
    # REST's filter: the documents it admits, chosen before ranking (a query matching others finds only them).
    api = httpx.Client(base_url=server.v1, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60)
    for text, expected in (('topic = "pets"', {ids["cats.txt"]}), ('name = "tax.txt"', {ids["tax.txt"]}),
                           ('topic = "cars"', set())):  # fmt: skip
        body = {"query": "bread dough revenue kitten", "source": {"collection_ids": [made.collection_id]},
                "filter": text, "retrieval_mode": "semantic"}  # fmt: skip
        found = api.post("/documents/search", json=body).json()["matches"]
        assert {m["file_id"] for m in found} == expected, text
    client.collections.reindex_document(made.collection_id, ids["bread.md"])
    client.collections.remove_document(made.collection_id, ids["trains.txt"])
    left = client.collections.search("night train Vienna", [made.collection_id], retrieval_mode="keyword").matches
    assert ids["trains.txt"] not in [m.file_id for m in left]
    # Another key sees none of it.
    other = xai(server, OTHER_KEY)
    for call in (
        lambda: other.collections.get(made.collection_id),
        lambda: other.collections.search("bread", [made.collection_id]),
        lambda: other.collections.add_existing_document(made.collection_id, ids["cats.txt"]),
    ):
        with pytest.raises(grpc.RpcError) as refused:
            call()
        assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    assert made.collection_id not in [c.collection_id for c in other.collections.list().collections]
    client.collections.delete(made.collection_id)
    with pytest.raises(grpc.RpcError) as gone:
        client.collections.get(made.collection_id)
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND


def test_rest_routes_and_bad_input(server: Server) -> None:
    api = httpx.Client(base_url=server.v1, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60)
    made = api.post("/collections", json={"collection_name": "rest", "chunk_configuration": {
        "chars_configuration": {"max_chunk_size_chars": 400, "chunk_overlap_chars": 50}}}).json()  # fmt: skip
    collection = made["collection_id"]
    assert made["chunk_configuration"]["chars_configuration"]["max_chunk_size_chars"] == 400
    long_text = (
        ("Filler about nothing in particular. " * 30)
        + "The secret ingredient is cardamom. "
        + ("More filler text follows here. " * 30)
    )
    file_id = api.post("/files", files={"file": ("long.txt", long_text.encode())}).json()["id"]
    added = api.post(f"/collections/{collection}/documents/{file_id}")
    assert added.status_code == 200 and added.json()["status"] in (
        "DOCUMENT_STATUS_PROCESSING",
        "DOCUMENT_STATUS_PROCESSED",
    )
    deadline = time.monotonic() + 30
    while api.get(f"/collections/{collection}/documents/{file_id}").json()["status"] != "DOCUMENT_STATUS_PROCESSED":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    document = api.get(f"/collections/{collection}/documents/{file_id}").json()
    assert int(document["chunk_count"]) > 3
    found = api.post("/documents/search", json={"query": "secret ingredient cardamom", "source": {
        "collection_ids": [collection]}, "retrieval_mode": "keyword", "limit": 2}).json()  # fmt: skip
    first = found["matches"][0]
    assert first["file_id"] == file_id and "cardamom" in first["chunk_content"] and first["chunk_id"]
    # The chunk's text stands where it says in the document (offsets survive into citations).
    assert api.get("/collections", params={"order": "asc", "sort_by": "name"}).json()["collections"][0]["collection_id"]
    for body, status, needle in (
        ({"query": "x", "source": {"collection_ids": ["collection_nope"]}}, 404, "Collection not found"),
        ({"query": "x", "source": {"collection_ids": [collection]}, "retrieval_mode": "fuzzy"}, 400, "retrieval_mode"),
        ({"query": "", "source": {"collection_ids": [collection]}}, 400, "query"),
        ({"query": "x", "source": {"collection_ids": []}}, 400, "at least one collection"),
        ({"query": "x", "source": {"collection_ids": [collection]}, "filter": "a = "}, 400, "filter"),
        ({"query": "x", "source": {"collection_ids": [collection]}, "group_by": "file_id"}, 400, "group_by"),
        ({"query": "x", "source": {"collection_ids": [collection]}, "limit": 1000}, 400, "limit"),
        ({"query": "x", "source": "everything"}, 400, "Invalid request"),
    ):
        answer = api.post("/documents/search", json=body)
        assert answer.status_code == status and needle in answer.json()["error"], (body, answer.text)
    for body, needle in (
        ({"collection_name": ""}, "name"),
        ({"collection_name": "x", "index_configuration": {"model_name": "nope"}}, "does not exist"),
        ({"collection_name": "x", "chunk_configuration": {"tokens_configuration": {"max_chunk_size_tokens": 5}}},
         "tokens_configuration"),
        ({"collection_name": "x", "chunk_configuration": {"chars_configuration": {"max_chunk_size_chars": 5}}},
         "max_chunk_size_chars"),
        ({"collection_name": 5}, "Invalid request"),
    ):  # fmt: skip
        answer = api.post("/collections", json=body)
        assert answer.status_code in (400, 404) and needle in answer.json()["error"], (body, answer.text)
    assert api.post(f"/collections/{collection}/documents/{file_id}").status_code == 400  # there already
    assert api.post(f"/collections/{collection}/documents/file_nope").status_code == 404
    other = httpx.Client(base_url=server.v1, headers={"Authorization": f"Bearer {OTHER_KEY}"})
    assert other.get(f"/collections/{collection}").status_code == 404
    assert other.delete(f"/collections/{collection}").status_code == 404
    assert api.delete(f"/collections/{collection}/documents/{file_id}").json()["deleted"]
    assert api.delete(f"/collections/{collection}").json()["deleted"]
    assert "Traceback" not in server.log.read_text()


def test_a_failing_document_says_why(server: Server) -> None:
    api = httpx.Client(base_url=server.v1, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60)
    collection = api.post("/collections", json={"collection_name": "bad"}).json()["collection_id"]
    file_id = api.post("/files", files={"file": ("blob.bin", bytes(range(256)) * 8)}).json()["id"]
    api.post(f"/collections/{collection}/documents/{file_id}")
    deadline = time.monotonic() + 30
    while (document := api.get(f"/collections/{collection}/documents/{file_id}").json())["status"].endswith(
        "PROCESSING"
    ):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert document["status"] == "DOCUMENT_STATUS_FAILED" and "neither text nor a PDF" in document["error_message"]
    api.delete(f"/collections/{collection}")


def _notes(client: Client) -> tuple[str, dict[str, str]]:
    made = client.collections.create("tool notes")
    ids = {}
    for name, text in DOCS.items():
        document = client.collections.upload_document(
            made.collection_id, name, text.encode(), wait_for_indexing=True, poll_interval=timedelta(milliseconds=100)
        )
        ids[name] = document.file_metadata.file_id
    return made.collection_id, ids


def test_openai_file_search_runs_on_the_collections(server: Server) -> None:
    import openai

    collection, ids = _notes(xai(server))
    client = openai.OpenAI(base_url=server.v1, api_key=API_KEY, max_retries=0)
    response = client.responses.create(
        model="gemma-3-270m",
        input="How long does bread dough rise?",
        tools=[{"type": "file_search", "vector_store_ids": [collection], "max_num_results": 2}],
        tool_choice="required",
        include=["file_search_call.results"],
        max_output_tokens=32,
        extra_body={"max_turns": 2},  # the search, then the answer (xAI's field)
    )
    [call] = [item for item in response.output if item.type == "file_search_call"]
    assert call.status == "completed" and call.queries and call.queries[0]
    assert call.results and {r.file_id for r in call.results} <= set(ids.values())
    assert response.usage.model_extra["server_side_tool_usage_details"]["file_search_calls"] == 1
    answer = [item for item in response.output if item.type == "message"][-1]
    cited = {a.url for a in answer.content[0].annotations}
    assert cited and all(url.startswith(f"collections://{collection}/files/") for url in cited)
    with pytest.raises(openai.NotFoundError):  # another key's collection
        openai.OpenAI(base_url=server.v1, api_key=OTHER_KEY, max_retries=0).responses.create(
            model="gemma-3-270m", input="x", tools=[{"type": "file_search", "vector_store_ids": [collection]}]
        )
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="gemma-3-270m", input="x", tools=[{"type": "file_search", "vector_store_ids": [
            collection], "filters": {"type": "eq", "key": "a", "value": 1}}])  # fmt: skip


def test_xai_sdk_collections_search_tool(server: Server) -> None:
    from xai_sdk.chat import user
    from xai_sdk.proto import chat_pb2
    from xai_sdk.tools import collections_search

    client = xai(server)
    collection, _ids = _notes(client)
    chat = client.chat.create(
        model="gemma-3-270m", tools=[collections_search([collection], limit=2)],
        tool_choice="required", max_tokens=32, max_turns=2,
        include=[chat_pb2.INCLUDE_OPTION_COLLECTIONS_SEARCH_CALL_OUTPUT],
    )  # fmt: skip
    chat.append(user("When does the night train to Vienna leave?"))
    response = chat.sample()
    assert response.server_side_tool_usage.get("SERVER_SIDE_TOOL_COLLECTIONS_SEARCH") == 1
    assert any(c.startswith(f"collections://{collection}/files/") for c in response.citations)
