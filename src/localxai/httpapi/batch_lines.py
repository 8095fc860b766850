"""Batch requests as REST clients write them: the `batch_requests` of an add call
(`{"batch_request_id", "batch_request": {"chat_get_completion": <chat completions body>}}`) and the lines
of a JSONL input file (`{"custom_id", "method": "POST", "url": "/v1/chat/completions" | "/v1/responses",
"body"}`). Each becomes a batches.Submitted whose `read` parses the body as that endpoint does, so a bad
request fails alone, with the error its endpoint would have answered.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from pydantic import ValidationError

from localxai.batches import Submitted
from localxai.chat import ChatRequest, Message, Role, TextPart
from localxai.errors import InvalidArgument, MalformedBody
from localxai.httpapi import convert, responses_input
from localxai.httpapi.errors import validation_message
from localxai.httpapi.schema import ChatCompletionRequest
from localxai.sealing import Sealer

CHAT = "/v1/chat/completions"
RESPONSES = "/v1/responses"


def add_requests(body: Any) -> list[Submitted]:
    """The `batch_requests` of POST /v1/batches/{id}/requests; raises for a body of the wrong shape."""
    if not isinstance(body, dict) or not isinstance(body.get("batch_requests"), list):
        raise InvalidArgument('The body must be a JSON object with a "batch_requests" list.')
    out = []
    for index, item in enumerate(body["batch_requests"]):
        where = f"batch_requests[{index}]"
        if not isinstance(item, dict):
            raise InvalidArgument(f"{where} must be an object.")
        request_id = _request_id(item.get("batch_request_id"), f"{where}.batch_request_id")
        wrapped = item.get("batch_request")
        if not isinstance(wrapped, dict) or len(wrapped) != 1:
            raise InvalidArgument(f'{where}.batch_request must be an object with one key, "chat_get_completion".')
        [(kind, fields)] = wrapped.items()
        endpoint = CHAT if kind == "chat_get_completion" else kind
        out.append(Submitted(request_id, endpoint, _model(fields), _reader(endpoint, fields, None)))
    return out


def jsonl_requests(data: bytes, sealer: Sealer) -> list[Submitted]:
    """The lines of a JSONL input file. A line that is not a request is a request that fails (named by
    its custom_id when it has one, else by its line number); blank lines are skipped."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidArgument("The input file is not UTF-8 text (a JSONL file of requests).") from None
    out = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError:
            out.append(_failed(f"line-{number}", f"Line {number} is not valid JSON."))
            continue
        if not isinstance(item, dict):
            out.append(_failed(f"line-{number}", f"Line {number} is not a JSON object."))
            continue
        custom_id = item.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id:
            out.append(_failed(f"line-{number}", f"Line {number} has no custom_id string."))
            continue
        url, method, fields = item.get("url"), item.get("method", "POST"), item.get("body")
        if method != "POST":
            out.append(_failed(custom_id, f"Line {number}: method must be POST, got {str(method)[:20]!r}."))
            continue
        endpoint = url if isinstance(url, str) else ""
        out.append(Submitted(custom_id, endpoint, _model(fields), _reader(endpoint, fields, sealer)))
    if not out:
        raise InvalidArgument("The input file holds no requests.")
    return out


def _request_id(value: Any, where: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidArgument(f"{where} must be a string.")
    return value


def _model(fields: Any) -> str:
    model = fields.get("model") if isinstance(fields, dict) else None
    return model if isinstance(model, str) else ""


def _failed(request_id: str, message: str) -> Submitted:
    def read() -> ChatRequest:
        raise InvalidArgument(message)

    return Submitted(request_id, CHAT, "", read)


def _reader(endpoint: str, fields: Any, sealer: Sealer | None) -> Callable[[], ChatRequest]:
    def read() -> ChatRequest:
        if not isinstance(fields, dict):
            raise InvalidArgument("The request body must be a JSON object.")
        try:
            if endpoint == CHAT:
                return convert.chat_request(ChatCompletionRequest.model_validate(fields))
            if endpoint == RESPONSES:
                return _responses_request(responses_input.ResponsesRequest.model_validate(fields), sealer)
        except ValidationError as exc:
            raise MalformedBody(validation_message(exc.errors())) from None
        raise InvalidArgument(f"Unsupported batch request kind {endpoint[:100]!r}.")  # Batches names the endpoints

    return read


def _responses_request(body: responses_input.ResponsesRequest, sealer: Sealer | None) -> ChatRequest:
    """A Responses body as one self-contained request: its instructions become the system message; a
    batch request cannot continue a stored conversation."""
    if body.previous_response_id:
        raise InvalidArgument("previous_response_id is not supported in batch requests.")
    assert sealer is not None, "Responses bodies come in input files, read with the sealer"
    turn = responses_input.turn(body, sealer)
    request = turn.request
    if turn.instructions:
        system = Message(Role.SYSTEM, (TextPart(turn.instructions),))
        request = replace(request, messages=(system, *request.messages))
    return request
