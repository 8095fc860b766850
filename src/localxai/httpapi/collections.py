"""REST routes of collections: `POST /v1/documents/search` (xAI's body) and `/v1/collections...` (the
management API's collections, in the JSON of the proto messages the SDK's gRPC calls carry: field names as
in the proto, e.g. `collection_name`, `chunk_configuration.chars_configuration.max_chunk_size_chars`).

Each route parses its body and path into the very request message gRPC gets and calls the same operation
(grpcapi/collections.py), so both wires validate, answer and fail alike.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from google.protobuf import json_format
from google.protobuf.message import Message
from xai_sdk.proto import collections_pb2, documents_pb2

from localxai.errors import InvalidArgument, UnsupportedParameter
from localxai.grpcapi.collections import CollectionsOperations, DocumentsOperations
from localxai.httpapi.errors import json_body
from localxai.runtime import Runtime

MODES = {"hybrid": "hybrid_retrieval", "semantic": "semantic_retrieval", "keyword": "keyword_retrieval"}


async def _body(request: Request) -> dict[str, Any]:
    body = await json_body(request)
    if not isinstance(body, dict):
        raise InvalidArgument("The request body must be a JSON object.")
    return body


def _message(kind: type[Message], fields: dict[str, Any]) -> Any:
    try:
        return json_format.ParseDict(fields, kind())
    except json_format.ParseError as exc:
        raise InvalidArgument(f"Invalid request: {exc}") from None


def _json(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def search_request(body: dict[str, Any]) -> tuple[documents_pb2.SearchRequest, str]:
    """xAI's REST search body: `retrieval_mode` a name (or `{"type": name}`); `group_by` refused. The filter
    is returned beside the message (the proto has no field for it)."""
    if body.get("group_by"):
        raise UnsupportedParameter("Argument not supported: group_by")
    fields = {k: v for k, v in body.items() if k not in ("filter", "group_by", "retrieval_mode")}
    mode = body.get("retrieval_mode")
    if isinstance(mode, dict):
        mode = mode.get("type")
    if mode is not None:
        if mode not in MODES:
            raise InvalidArgument(f"retrieval_mode must be one of {', '.join(MODES)}, got {mode!r}.")
        fields[MODES[mode]] = {}
    filter_text = body.get("filter") or ""
    if not isinstance(filter_text, str):
        raise InvalidArgument("filter must be a string (AIP-160).")
    return _message(documents_pb2.SearchRequest, fields), filter_text


def add_routes(app: FastAPI, runtime: Runtime) -> None:
    collections = CollectionsOperations(runtime.collections)
    documents = DocumentsOperations(runtime.collections)

    @app.post("/v1/documents/search")
    async def search(request: Request) -> dict[str, Any]:
        message, filter_text = search_request(await _body(request))
        return _json(await documents.search(message, request.state.api_key, filter_text))

    @app.post("/v1/collections")
    async def create_collection(request: Request) -> dict[str, Any]:
        message = _message(collections_pb2.CreateCollectionRequest, await _body(request))
        return _json(await collections.CreateCollection(message, request.state.api_key))

    @app.get("/v1/collections")
    async def list_collections(request: Request) -> dict[str, Any]:
        message = _message(collections_pb2.ListCollectionsRequest, _query(request, "COLLECTIONS"))
        return _json(await collections.ListCollections(message, request.state.api_key))

    @app.get("/v1/collections/{collection_id}")
    async def get_collection(collection_id: str, request: Request) -> dict[str, Any]:
        message = collections_pb2.GetCollectionMetadataRequest(collection_id=collection_id)
        return _json(await collections.GetCollectionMetadata(message, request.state.api_key))

    @app.put("/v1/collections/{collection_id}")
    async def update_collection(collection_id: str, request: Request) -> dict[str, Any]:
        body = {**await _body(request), "collection_id": collection_id}
        message = _message(collections_pb2.UpdateCollectionRequest, body)
        return _json(await collections.UpdateCollection(message, request.state.api_key))

    @app.delete("/v1/collections/{collection_id}")
    async def delete_collection(collection_id: str, request: Request) -> dict[str, Any]:
        message = collections_pb2.DeleteCollectionRequest(collection_id=collection_id)
        await collections.DeleteCollection(message, request.state.api_key)
        return {"collection_id": collection_id, "deleted": True}

    @app.post("/v1/collections/{collection_id}/documents/{file_id}")
    async def add_document(collection_id: str, file_id: str, request: Request) -> dict[str, Any]:
        body = await _body(request) if await request.body() else {}
        fields = {**body, "collection_id": collection_id, "file_id": file_id}
        message = _message(collections_pb2.AddDocumentToCollectionRequest, fields)
        await collections.AddDocumentToCollection(message, request.state.api_key)
        get = collections_pb2.GetDocumentMetadataRequest(collection_id=collection_id, file_id=file_id)
        return _json(await collections.GetDocumentMetadata(get, request.state.api_key))

    @app.get("/v1/collections/{collection_id}/documents")
    async def list_documents(collection_id: str, request: Request) -> dict[str, Any]:
        message = _message(
            collections_pb2.ListDocumentsRequest, {**_query(request, "DOCUMENTS"), "collection_id": collection_id}
        )
        return _json(await collections.ListDocuments(message, request.state.api_key))

    @app.get("/v1/collections/{collection_id}/documents/{file_id}")
    async def get_document(collection_id: str, file_id: str, request: Request) -> dict[str, Any]:
        message = collections_pb2.GetDocumentMetadataRequest(collection_id=collection_id, file_id=file_id)
        return _json(await collections.GetDocumentMetadata(message, request.state.api_key))

    @app.patch("/v1/collections/{collection_id}/documents/{file_id}")
    async def update_document(collection_id: str, file_id: str, request: Request) -> dict[str, Any]:
        body = {**await _body(request), "collection_id": collection_id, "file_id": file_id}
        message = _message(collections_pb2.UpdateDocumentRequest, body)
        return _json(await collections.UpdateDocument(message, request.state.api_key))

    @app.post("/v1/collections/{collection_id}/documents/{file_id}/reindex")
    async def reindex_document(collection_id: str, file_id: str, request: Request) -> dict[str, Any]:
        message = collections_pb2.ReIndexDocumentRequest(collection_id=collection_id, file_id=file_id)
        await collections.ReIndexDocument(message, request.state.api_key)
        get = collections_pb2.GetDocumentMetadataRequest(collection_id=collection_id, file_id=file_id)
        return _json(await collections.GetDocumentMetadata(get, request.state.api_key))

    @app.delete("/v1/collections/{collection_id}/documents/{file_id}")
    async def remove_document(collection_id: str, file_id: str, request: Request) -> dict[str, Any]:
        message = collections_pb2.RemoveDocumentFromCollectionRequest(collection_id=collection_id, file_id=file_id)
        await collections.RemoveDocumentFromCollection(message, request.state.api_key)
        return {"collection_id": collection_id, "file_id": file_id, "deleted": True}


def _query(request: Request, sorts: str) -> dict[str, Any]:
    """Query parameters as message fields: `order` asc|desc and `sort_by` by their short names too
    (numbers stay strings: the JSON parser reads them)."""
    fields: dict[str, Any] = dict(request.query_params)
    order = fields.get("order")
    if order in ("asc", "desc"):
        fields["order"] = "ORDERING_ASCENDING" if order == "asc" else "ORDERING_DESCENDING"
    sort_by = fields.get("sort_by")
    if isinstance(sort_by, str) and sort_by.isalpha():
        fields["sort_by"] = f"{sorts}_SORT_BY_{sort_by.upper()}"
    return fields
