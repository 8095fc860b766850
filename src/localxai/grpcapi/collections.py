"""gRPC `collections.Collections` (what xai-sdk's `client.collections` calls on its management channel)
and `xai_api.Documents.Search`, over collections.py. Point the SDK's `management_api_host` at this
server's gRPC port and use the same key for both channels: collections, like files, are the key's own."""

from __future__ import annotations

from typing import Any

from google.protobuf import empty_pb2
from xai_sdk.proto import (
    collections_pb2,
    collections_pb2_grpc,
    documents_pb2,
    documents_pb2_grpc,
    shared_pb2,
    types_pb2,
)

from localxai import errors as e
from localxai.auth import ApiKey
from localxai.collections import Collections, Match
from localxai.grpcapi.calls import unary
from localxai.grpcapi.convert import timestamp
from localxai.runtime import Runtime
from localxai.store.collections import CollectionRecord, DocumentRecord
from localxai.store.files import FileRecord

ORDERS = {
    shared_pb2.ORDERING_UNKNOWN: "desc",
    shared_pb2.ORDERING_ASCENDING: "asc",
    shared_pb2.ORDERING_DESCENDING: "desc",
}
COLLECTION_SORTS = {collections_pb2.COLLECTIONS_SORT_BY_NAME: "name", collections_pb2.COLLECTIONS_SORT_BY_AGE: "age"}
DOCUMENT_SORTS = {
    collections_pb2.DOCUMENTS_SORT_BY_NAME: "name",
    collections_pb2.DOCUMENTS_SORT_BY_SIZE: "size",
    collections_pb2.DOCUMENTS_SORT_BY_AGE: "age",
}
STATUSES = {
    "processing": collections_pb2.DOCUMENT_STATUS_PROCESSING,
    "processed": collections_pb2.DOCUMENT_STATUS_PROCESSED,
    "failed": collections_pb2.DOCUMENT_STATUS_FAILED,
}


def _pick(mapping: dict[int, str], value: int, field: str) -> str:
    if value not in mapping:
        raise e.InvalidArgument(f"{field} is not a value the Collections API defines ({value}).")
    return mapping[value]


def chunking(config: Any) -> tuple[int | None, int | None, bool]:
    """(characters, overlap, inject the name) from a ChunkConfiguration; token and byte sizes are refused."""
    kind = config.WhichOneof("config")
    if kind not in (None, "chars_configuration"):
        raise e.UnsupportedParameter(f"Argument not supported: chunk_configuration.{kind} (use chars_configuration)")
    chars = config.chars_configuration if kind else None
    return (
        chars.max_chunk_size_chars or None if chars else None,
        chars.chunk_overlap_chars if chars and chars.max_chunk_size_chars else None,
        config.inject_name_into_chunks,
    )


def field_definitions(definitions: Any) -> list[dict[str, Any]]:
    return [
        {"key": d.key, "required": d.required, "inject_into_chunk": d.inject_into_chunk, "unique": d.unique,
         "description": d.description}
        for d in definitions
    ]  # fmt: skip


def collection_message(record: CollectionRecord) -> collections_pb2.CollectionMetadata:
    return collections_pb2.CollectionMetadata(
        collection_id=record.id,
        collection_name=record.name,
        created_at=timestamp(int(record.created_at)),
        index_configuration=types_pb2.IndexConfiguration(model_name=record.model),
        chunk_configuration=types_pb2.ChunkConfiguration(
            chars_configuration=types_pb2.CharsConfiguration(
                max_chunk_size_chars=record.chunk_chars, chunk_overlap_chars=record.overlap_chars
            ),
            inject_name_into_chunks=record.inject_name,
        ),
        documents_count=record.documents,
        field_definitions=[collections_pb2.FieldDefinition(**d) for d in record.field_definitions],
        collection_description=record.description,
        total_file_size=record.total_bytes,
    )


def document_message(document: DocumentRecord, file: FileRecord | None) -> collections_pb2.DocumentMetadata:
    metadata = collections_pb2.FileMetadata(
        file_id=document.file_id, name=document.name, size_bytes=document.bytes,
        created_at=timestamp(int(file.created_at if file else document.created_at)),
        upload_status="UPLOAD_STATUS_COMPLETED", processing_status=document.status.upper(),
    )  # fmt: skip
    if file is not None and file.expires_at is not None:
        metadata.expires_at.CopyFrom(timestamp(int(file.expires_at)))
    message = collections_pb2.DocumentMetadata(
        file_metadata=metadata,
        fields=document.fields,
        status=STATUSES[document.status],
        error_message=document.error or "",
        chunk_count=document.chunks,
        chunks_processed_count=document.chunks,
    )
    if document.indexed_at is not None:
        message.last_indexed_at.CopyFrom(timestamp(int(document.indexed_at)))
    return message


def match_message(match: Match) -> documents_pb2.SearchMatch:
    return documents_pb2.SearchMatch(
        file_id=match.file_id, chunk_id=match.chunk_id, chunk_content=match.content, score=match.score,
        collection_ids=list(match.collection_ids),
    )  # fmt: skip


class _Operations:
    """The methods as plain calls (request message, caller) -> reply message: gRPC serves them (below), and
    REST's /v1/collections routes call the same ones with the JSON body parsed into the same messages."""

    def __init__(self, collections: Collections) -> None:
        self.collections = collections

    async def _document(self, collection_id: str, owner: str, file_id: str) -> collections_pb2.DocumentMetadata:
        document = await self.collections.document(collection_id, owner, file_id)
        return document_message(document, await self.collections.file_of(document, owner))


class CollectionsOperations(_Operations):
    async def CreateCollection(self, request: Any, caller: ApiKey) -> Any:
        chars, overlap, inject = chunking(request.chunk_configuration)
        created = await self.collections.create(
            caller.key_id, request.collection_name, request.index_configuration.model_name or None, chars, overlap,
            inject, field_definitions(request.field_definitions), request.collection_description,
        )  # fmt: skip
        return collection_message(created)

    async def ListCollections(self, request: Any, caller: ApiKey) -> Any:
        if request.filter:
            raise e.UnsupportedParameter("Argument not supported: filter (ListCollections)")
        order = _pick(ORDERS, request.order, "order")
        sort_by = _pick({0: "age", **COLLECTION_SORTS}, request.sort_by, "sort_by")
        records, token = await self.collections.page(
            caller.key_id, request.limit or 100, order, sort_by, request.pagination_token
        )
        return collections_pb2.ListCollectionsResponse(
            collections=[collection_message(r) for r in records], pagination_token=token
        )

    async def GetCollectionMetadata(self, request: Any, caller: ApiKey) -> Any:
        return collection_message(await self.collections.get(request.collection_id, caller.key_id))

    async def UpdateCollection(self, request: Any, caller: ApiKey) -> Any:
        chars, overlap, _ = chunking(request.chunk_configuration)
        definitions = None
        if request.field_definition_updates:
            current = {d["key"]: d for d in (await self.collections.get(request.collection_id, caller.key_id))
                       .field_definitions}  # fmt: skip
            for update in request.field_definition_updates:
                [definition] = field_definitions([update.field_definition])
                if update.operation == collections_pb2.FIELD_DEFINITION_DELETE:
                    current.pop(definition["key"], None)
                else:
                    current[definition["key"]] = definition
            definitions = list(current.values())
        updated = await self.collections.update(
            request.collection_id, caller.key_id, request.collection_name or None,
            request.collection_description or None, chars, overlap, definitions,
        )  # fmt: skip
        return collection_message(updated)

    async def DeleteCollection(self, request: Any, caller: ApiKey) -> Any:
        await self.collections.delete(request.collection_id, caller.key_id)
        return empty_pb2.Empty()

    async def AddDocumentToCollection(self, request: Any, caller: ApiKey) -> Any:
        await self.collections.add_document(request.collection_id, caller.key_id, request.file_id, dict(request.fields))
        return empty_pb2.Empty()

    async def ListDocuments(self, request: Any, caller: ApiKey) -> Any:
        if request.filter:
            raise e.UnsupportedParameter("Argument not supported: filter (ListDocuments)")
        order = _pick(ORDERS, request.order, "order")
        sort_by = _pick({0: "age", **DOCUMENT_SORTS}, request.sort_by, "sort_by")
        documents, token = await self.collections.page_documents(
            request.collection_id, caller.key_id, request.limit or 100, order, sort_by, request.pagination_token,
            request.name,
        )  # fmt: skip
        files = [await self.collections.file_of(d, caller.key_id) for d in documents]
        return collections_pb2.ListDocumentsResponse(
            documents=[document_message(d, f) for d, f in zip(documents, files, strict=True)], pagination_token=token
        )

    async def GetDocumentMetadata(self, request: Any, caller: ApiKey) -> Any:
        return await self._document(request.collection_id, caller.key_id, request.file_id)

    async def BatchGetDocuments(self, request: Any, caller: ApiKey) -> Any:
        documents = await self.collections.documents(request.collection_id, caller.key_id, list(request.file_ids))
        files = [await self.collections.file_of(d, caller.key_id) for d in documents]
        return collections_pb2.BatchGetDocumentsResponse(
            documents=[document_message(d, f) for d, f in zip(documents, files, strict=True)]
        )

    async def RemoveDocumentFromCollection(self, request: Any, caller: ApiKey) -> Any:
        await self.collections.remove_document(request.collection_id, caller.key_id, request.file_id)
        return empty_pb2.Empty()

    async def UpdateDocument(self, request: Any, caller: ApiKey) -> Any:
        if request.data or request.content_type:
            raise e.UnsupportedParameter(
                "Argument not supported: data (UpdateDocument): upload the new file and add it instead"
            )
        await self.collections.update_document(
            request.collection_id, caller.key_id, request.file_id, dict(request.fields) or None, request.name
        )
        return await self._document(request.collection_id, caller.key_id, request.file_id)

    async def ReIndexDocument(self, request: Any, caller: ApiKey) -> Any:
        await self.collections.reindex(request.collection_id, caller.key_id, request.file_id)
        return empty_pb2.Empty()

    async def GenerateCollectionDescription(self, request: Any, caller: ApiKey) -> Any:
        raise e.MethodNotAllowed(
            "GenerateCollectionDescription is not served here: set collection_description when creating or updating."
        )


class DocumentsOperations(_Operations):
    async def Search(self, request: documents_pb2.SearchRequest, caller: ApiKey) -> Any:
        return await self.search(request, caller)

    async def search(self, request: documents_pb2.SearchRequest, caller: ApiKey, filter_text: str = "") -> Any:
        """Search, with REST's filter (gRPC's SearchRequest has none)."""
        mode = request.WhichOneof("retrieval_mode")  # unset: hybrid, as at xAI
        matches = await self.collections.search(
            caller.key_id, request.query, list(request.source.collection_ids), request.limit or None,
            (mode or "hybrid_retrieval").removesuffix("_retrieval"), filter_text,
        )  # fmt: skip
        return documents_pb2.SearchResponse(matches=[match_message(m) for m in matches])


def _servicer(name: str, base: type, operations: type[_Operations]) -> type:
    """A servicer whose every method is `operations`' one, through the shared call handling (calls.py)."""

    def __init__(self: Any, runtime: Runtime) -> None:
        self.runtime = runtime
        self.operations = operations(runtime.collections)

    methods: dict[str, Any] = {"__init__": __init__}
    for method in (m for m in vars(operations) if m[0].isupper()):

        async def call(self: Any, request: Any, context: Any, caller: ApiKey, _method: str = method) -> Any:
            return await getattr(self.operations, _method)(request, caller)

        call.__name__ = method
        methods[method] = unary(call)
    return type(name, (base,), methods)


CollectionsServicer = _servicer("CollectionsServicer", collections_pb2_grpc.CollectionsServicer, CollectionsOperations)
DocumentsServicer = _servicer("DocumentsServicer", documents_pb2_grpc.DocumentsServicer, DocumentsOperations)


def add_to(server: Any, runtime: Runtime) -> None:
    collections_pb2_grpc.add_CollectionsServicer_to_server(CollectionsServicer(runtime), server)
    documents_pb2_grpc.add_DocumentsServicer_to_server(DocumentsServicer(runtime), server)
