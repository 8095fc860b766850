"""gRPC BatchMgmt (xai-sdk `client.batch`), every method, over the same Batches service as REST."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import empty_pb2
from google.rpc import status_pb2
from xai_sdk.proto import batch_pb2, batch_pb2_grpc

from localxai import errors as e
from localxai.auth import ApiKey
from localxai.batches import Result, Submitted
from localxai.chat import ChatRequest
from localxai.grpcapi import convert
from localxai.grpcapi.calls import unary
from localxai.runtime import Runtime
from localxai.store.batches import BatchRecord, RequestRow

Metadata = batch_pb2.BatchRequestMetadata
STATES = {
    "pending": Metadata.STATE_PENDING,
    "succeeded": Metadata.STATE_SUCCEEDED,
    "cancelled": Metadata.STATE_CANCELLED,
    "failed": Metadata.STATE_FAILED,
}
_BY_STATE = {number: name for name, number in STATES.items()}
CHAT = "/v1/chat/completions"  # a completion request is a chat completion, whichever wire added it


def _timestamp(seconds: float | None) -> Any:
    return None if seconds is None else convert.timestamp(int(seconds))


def batch(record: BatchRecord) -> batch_pb2.Batch:
    counts = record.counts
    return batch_pb2.Batch(
        batch_id=record.id,
        name=record.name,
        create_time=_timestamp(record.created_at),
        expire_time=_timestamp(record.expires_at),
        create_api_key_id=record.owner,
        cancel_time=_timestamp(record.cancelled_at),
        cancel_by_xai_message=record.cancel_message or "",
        input_file_id=record.input_file_id or "",
        state=batch_pb2.BatchState(
            num_requests=counts.requests,
            num_pending=counts.pending,
            num_success=counts.success,
            num_error=counts.error,
            num_cancelled=counts.cancelled,
        ),
        cost_breakdown=batch_pb2.BatchCostBreakdown(total_cost_usd_ticks=0),
    )


def _metadata(row: RequestRow) -> batch_pb2.BatchRequestMetadata:
    return Metadata(
        batch_request_id=row.batch_request_id, endpoint=row.endpoint, model=row.model, state=STATES[row.state],
        create_time=_timestamp(row.created_at), finish_time=_timestamp(row.finished_at),
    )  # fmt: skip


def _result(result: Result) -> batch_pb2.BatchResult:
    if result.completion is not None:
        data = batch_pb2.BatchResultData(completion_response=convert.completion(result.completion))
        return batch_pb2.BatchResult(batch_request_id=result.row.batch_request_id, response=data)
    assert result.error is not None
    error = status_pb2.Status(code=result.error.code, message=result.message or "")
    return batch_pb2.BatchResult(batch_request_id=result.row.batch_request_id, error=error)


class BatchMgmtServicer(batch_pb2_grpc.BatchMgmtServicer):
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    @unary
    async def CreateBatch(self, request: batch_pb2.CreateBatchRequest, context: Any, caller: ApiKey) -> Any:
        return batch(await self.runtime.batches.create(request.name, request.input_file_id or None, caller))

    @unary
    async def AddBatchRequests(self, request: batch_pb2.AddBatchRequestsRequest, context: Any, caller: ApiKey) -> Any:
        await self.runtime.batches.add(request.batch_id, [self._submitted(r) for r in request.batch_requests], caller)
        return empty_pb2.Empty()

    @unary
    async def GetBatch(self, request: batch_pb2.GetBatchRequest, context: Any, caller: ApiKey) -> Any:
        return batch(await self.runtime.batches.get(request.batch_id, caller))

    @unary
    async def ListBatches(self, request: batch_pb2.ListBatchesRequest, context: Any, caller: ApiKey) -> Any:
        records, token = await self.runtime.batches.page(caller, request.limit, request.pagination_token)
        return batch_pb2.ListBatchesResponse(batches=[batch(r) for r in records], pagination_token=token)

    @unary
    async def CancelBatch(self, request: batch_pb2.CancelBatchRequest, context: Any, caller: ApiKey) -> Any:
        return batch(await self.runtime.batches.cancel(request.batch_id, caller))

    @unary
    async def ListBatchRequestMetadata(
        self, request: batch_pb2.ListBatchRequestMetadataRequest, context: Any, caller: ApiKey
    ) -> Any:
        if any(s not in _BY_STATE for s in request.status):
            raise e.InvalidArgument("status must be STATE_PENDING, STATE_SUCCEEDED, STATE_CANCELLED or STATE_FAILED.")
        states = [_BY_STATE[s] for s in request.status]
        rows, token = await self.runtime.batches.requests(
            request.batch_id, caller, request.limit, request.pagination_token, states
        )
        return batch_pb2.ListBatchRequestMetadataResponse(
            batch_request_metadata=[_metadata(r) for r in rows], pagination_token=token
        )

    @unary
    async def ListBatchResults(self, request: batch_pb2.ListBatchResultsRequest, context: Any, caller: ApiKey) -> Any:
        results, token = await self.runtime.batches.results(
            request.batch_id, caller, request.limit, request.pagination_token
        )
        return batch_pb2.ListBatchResultsResponse(results=[_result(r) for r in results], pagination_token=token)

    @unary
    async def GetBatchRequestResult(
        self, request: batch_pb2.GetBatchRequestResultRequest, context: Any, caller: ApiKey
    ) -> Any:
        row, result = await self.runtime.batches.result(request.batch_id, request.batch_request_id, caller)
        answer = batch_pb2.GetBatchRequestResultResponse(result=_result(result) if result else None)
        answer.request.batch_request_id = row.batch_request_id
        return answer

    def _submitted(self, request: batch_pb2.BatchRequest) -> Submitted:
        kind = request.WhichOneof("request")
        if kind != "completion_request":
            name = kind or "none"

            def refused() -> ChatRequest:
                raise e.InvalidArgument(f"Batch requests of kind {name} are not served here; only completion_request.")

            return Submitted(request.batch_request_id or None, CHAT, "", refused)
        completion = request.completion_request
        sealer = self.runtime.sealer

        def read() -> ChatRequest:
            if completion.store_messages or completion.HasField("previous_response_id"):
                raise e.UnsupportedParameter("Argument not supported: store_messages and previous_response_id (batch)")
            return convert.chat_request(completion, sealer=sealer)

        return Submitted(request.batch_request_id or None, CHAT, completion.model, read)


def add_to(server: grpc.aio.Server, runtime: Runtime) -> None:
    batch_pb2_grpc.add_BatchMgmtServicer_to_server(BatchMgmtServicer(runtime), server)
