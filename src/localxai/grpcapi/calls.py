"""gRPC call handling, written once for every method: request id, authentication, metrics, errors.

Servicer methods are decorated with `unary` or `streaming` and receive the authenticated caller;
they raise localxai's errors and never touch statuses. What reaches the client is a status from
the one table below and a message that is safe to show: an unexpected exception becomes
`INTERNAL "internal error (request id …)"` with its traceback in the log, never grpc's default
`UNKNOWN "Unexpected <class>: …"`. A request body that does not decode is INVALID_ARGUMENT.
"""

from __future__ import annotations

import functools
import logging
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol, TypeVar

import grpc
from google.protobuf.message import DecodeError

from localxai import errors as e
from localxai import logs
from localxai.auth import ApiKey
from localxai.runtime import Runtime

log = logging.getLogger(__name__)

# The SDK treats a wrong key as UNAUTHENTICATED (REST answers 400 with the same message).
STATUS_OVERRIDES = {e.IncorrectApiKey: grpc.StatusCode.UNAUTHENTICATED}
CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")

Request = TypeVar("Request")
Reply = TypeVar("Reply")


class Servicer(Protocol):
    runtime: Runtime


class Malformed:
    """Stands for a request body that is not the method's message (see `lenient_bodies`)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def status_for(exc: e.LocalXAIError) -> grpc.StatusCode:
    for cls, code in STATUS_OVERRIDES.items():
        if isinstance(exc, cls):
            return code
    return getattr(grpc.StatusCode, exc.status.name)  # type: ignore[no-any-return]


class lenient_bodies(grpc.aio.ServerInterceptor):
    """Decode request bodies without raising: grpc would answer a DecodeError with UNKNOWN and the
    exception's text. The method's call handling refuses a Malformed body with INVALID_ARGUMENT."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        decode = getattr(handler, "request_deserializer", None)
        if decode is None:
            return handler

        def tolerant(data: bytes) -> Any:
            try:
                return decode(data)
            except (DecodeError, ValueError) as exc:
                return Malformed(type(exc).__name__)

        return handler._replace(request_deserializer=tolerant)  # type: ignore[attr-defined,no-any-return]


class _Call:
    """One call's request id, log tag and metrics; maps what the method raised to a status."""

    def __init__(self, servicer: Servicer, name: str, request: Any, context: grpc.aio.ServicerContext) -> None:
        self.runtime = servicer.runtime
        self.method = f"{type(servicer).__name__.removesuffix('Servicer')}/{name}"
        self.context = context
        sent = dict(context.invocation_metadata() or ()).get("x-request-id")
        self.request_id = sent if isinstance(sent, str) and CLIENT_REQUEST_ID.fullmatch(sent) else uuid.uuid4().hex
        self.model = getattr(request, "model", None) or getattr(request, "name", None)
        self.code = grpc.StatusCode.OK
        self.record = logs.begin(self.request_id)  # each call runs in a task of its own: no reset needed
        context.set_trailing_metadata((("x-request-id", self.request_id),))

    async def authenticate(self, request: Any) -> ApiKey:
        if isinstance(request, Malformed):
            raise e.InvalidArgument(f"The request body is not a valid {self.method} message ({request.reason}).")
        header = dict(self.context.invocation_metadata() or ()).get("authorization")
        return await self.runtime.auth.authenticate(header if isinstance(header, str) else None)

    async def fail(self, exc: BaseException) -> None:
        """End the call with `exc`'s status; raises grpc's abort (never returns)."""
        if isinstance(exc, e.LocalXAIError) and exc.public:
            self.code = status_for(exc)
            await self.context.abort(self.code, exc.message)
        log.error("gRPC %s failed", self.method, exc_info=exc)
        self.code = grpc.StatusCode.INTERNAL
        await self.context.abort(self.code, e.public_message(None, self.request_id))

    def done(self) -> None:
        if self.code is grpc.StatusCode.OK and self.context.cancelled():
            self.code = grpc.StatusCode.CANCELLED
        model = self.runtime.service.model_label(self.model)
        self.runtime.metrics.grpc_requests.labels(self.method, self.code.name, model).inc()
        logs.log.info(self.record.line("gRPC", self.method, self.code.name))


def unary(
    method: Callable[[Any, Request, grpc.aio.ServicerContext, ApiKey], Awaitable[Reply]],
) -> Callable[[Any, Request, grpc.aio.ServicerContext], Awaitable[Reply]]:
    @functools.wraps(method)
    async def handle(self: Servicer, request: Request, context: grpc.aio.ServicerContext) -> Reply:
        call = _Call(self, method.__name__, request, context)
        return await _handled(call, request, lambda caller: method(self, request, context, caller))

    return handle


async def _handled(call: _Call, request: Any, run: Callable[[ApiKey], Awaitable[Reply]]) -> Reply:
    """One unary-reply call: authenticated, its failure the call's status, counted and logged."""
    try:
        return await run(await call.authenticate(request))
    except grpc.aio.AbortError:
        raise
    except Exception as exc:
        await call.fail(exc)
        raise  # not reached: fail() aborts
    finally:
        call.done()


def streaming(
    method: Callable[[Any, Request, grpc.aio.ServicerContext, ApiKey], AsyncIterator[Reply]],
) -> Callable[[Any, Request, grpc.aio.ServicerContext], AsyncIterator[Reply]]:
    @functools.wraps(method)
    async def handle(self: Servicer, request: Request, context: grpc.aio.ServicerContext) -> AsyncIterator[Reply]:
        call = _Call(self, method.__name__, request, context)
        try:
            async for reply in method(self, request, context, await call.authenticate(request)):
                yield reply
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await call.fail(exc)
        finally:
            call.done()

    return handle


def client_streaming(
    method: Callable[[Any, AsyncIterator[Any], grpc.aio.ServicerContext, ApiKey], Awaitable[Reply]],
) -> Callable[[Any, AsyncIterator[Any], grpc.aio.ServicerContext], Awaitable[Reply]]:
    """A call whose client sends a stream of messages (an upload): `method` reads them, each checked."""

    @functools.wraps(method)
    async def handle(self: Servicer, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Reply:
        call = _Call(self, method.__name__, None, context)

        async def checked() -> AsyncIterator[Any]:
            async for request in requests:
                if isinstance(request, Malformed):
                    raise e.InvalidArgument(f"A message of {call.method} does not decode ({request.reason}).")
                yield request

        return await _handled(call, None, lambda caller: method(self, checked(), context, caller))

    return handle
