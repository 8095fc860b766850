"""REST routes of the Batch API (xai-platform-spec §2.4): batches as xAI's JSON (times RFC 3339),
results in chat-completion format whichever endpoint a request was written for."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request

from localxai.auth import ApiKey
from localxai.batches import MAX_ADD_BYTES, Batches, Result
from localxai.errors import InvalidArgument
from localxai.httpapi import convert
from localxai.httpapi.batch_lines import add_requests
from localxai.httpapi.errors import json_body
from localxai.store.batches import BatchRecord, RequestRow

STATES = ("pending", "succeeded", "failed", "cancelled")


def _time(seconds: float | None) -> str | None:
    return None if seconds is None else convert.rfc3339(seconds)


def batch_body(record: BatchRecord) -> dict[str, Any]:
    counts = record.counts
    return {
        "batch_id": record.id,
        "name": record.name,
        "create_time": _time(record.created_at),
        "expire_time": _time(record.expires_at),
        "create_api_key_id": record.owner,
        "cancel_time": _time(record.cancelled_at),
        "cancel_by_xai_message": record.cancel_message,
        "input_file_id": record.input_file_id,
        "state": {
            "num_requests": counts.requests,
            "num_pending": counts.pending,
            "num_success": counts.success,
            "num_error": counts.error,
            "num_cancelled": counts.cancelled,
        },
        "cost_breakdown": {"total_cost_usd_ticks": 0, "endpoint_costs": []},
    }


def _metadata_body(row: RequestRow) -> dict[str, Any]:
    return {
        "batch_request_id": row.batch_request_id,
        "endpoint": row.endpoint,
        "model": row.model,
        "state": row.state,
        "create_time": _time(row.created_at),
        "finish_time": _time(row.finished_at),
    }


def result_body(result: Result) -> dict[str, Any]:
    if result.completion is not None:
        outcome: dict[str, Any] = {"response": {"chat_get_completion": convert.completion_body(result.completion)}}
        message = ""
    else:
        assert result.error is not None
        message = result.message or ""
        outcome = {"error": {"code": result.error.code, "message": message}}
    return {"batch_request_id": result.row.batch_request_id, "batch_result": outcome, "error_message": message}


def _page_size(limit: str | None, page_size: str | None) -> int | None:
    """xAI's docs use `page_size`, its SDK and the Vercel AI SDK `limit` (spec §3): both are read."""
    value = limit if limit is not None else page_size
    if value is None:
        return None
    if not value.isdigit():
        raise InvalidArgument(f"limit must be a number, got {value[:20]!r}.")
    return int(value)


def add_routes(app: FastAPI, batches: Batches) -> None:
    @app.post("/v1/batches")
    async def create_batch(request: Request) -> dict[str, Any]:
        body = await json_body(request)
        if not isinstance(body, dict):
            raise InvalidArgument("The request body must be a JSON object.")
        name, file_id = body.get("name", ""), body.get("input_file_id")
        if not isinstance(name, str) or not (file_id is None or isinstance(file_id, str)):
            raise InvalidArgument("name and input_file_id must be strings.")
        unknown = sorted(set(body) - {"name", "input_file_id"})
        if unknown:
            raise InvalidArgument(f"Unknown field {unknown[0]!r} in the batch.")
        return batch_body(await batches.create(name, file_id, _caller(request)))

    @app.get("/v1/batches")
    async def list_batches(
        request: Request, limit: str | None = None, page_size: str | None = None, pagination_token: str = ""
    ) -> dict[str, Any]:
        records, token = await batches.page(_caller(request), _page_size(limit, page_size), pagination_token)
        return {"batches": [batch_body(r) for r in records], "pagination_token": token or None}

    # Before /v1/batches/{batch_id}: its parameter would take ":cancel" too.
    @app.post("/v1/batches/{batch_id}:cancel")
    async def cancel_batch(batch_id: str, request: Request) -> dict[str, Any]:
        return batch_body(await batches.cancel(batch_id, _caller(request)))

    @app.get("/v1/batches/{batch_id}")
    async def get_batch(batch_id: str, request: Request) -> dict[str, Any]:
        return batch_body(await batches.get(batch_id, _caller(request)))

    @app.post("/v1/batches/{batch_id}/requests")
    async def add_batch_requests(batch_id: str, request: Request) -> dict[str, Any]:
        body = await json_body(request, MAX_ADD_BYTES)  # xAI's 25 MB a call
        await batches.add(batch_id, add_requests(body), _caller(request))
        return {}

    @app.get("/v1/batches/{batch_id}/requests")
    async def list_batch_requests(
        batch_id: str,
        request: Request,
        limit: str | None = None,
        page_size: str | None = None,
        pagination_token: str = "",
        state: str | None = None,
    ) -> dict[str, Any]:
        states = [s.strip() for s in state.split(",")] if state else []
        if any(s not in STATES for s in states):
            raise InvalidArgument(f"state must be one of {', '.join(STATES)}.")
        rows, token = await batches.requests(
            batch_id, _caller(request), _page_size(limit, page_size), pagination_token, states
        )
        return {"batch_request_metadata": [_metadata_body(r) for r in rows], "pagination_token": token or None}

    @app.get("/v1/batches/{batch_id}/results")
    async def list_batch_results(
        batch_id: str,
        request: Request,
        limit: str | None = None,
        page_size: str | None = None,
        pagination_token: str = "",
    ) -> dict[str, Any]:
        results, token = await batches.results(
            batch_id, _caller(request), _page_size(limit, page_size), pagination_token
        )
        return {"results": [result_body(r) for r in results], "pagination_token": token or None}


def _caller(request: Request) -> ApiKey:
    caller: ApiKey = request.state.api_key
    return caller
