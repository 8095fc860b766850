"""The one exception tree of localxai.

Each error carries a canonical RPC status (xAI's REST layer fronts a gRPC service, so REST bodies
carry the gRPC status text as `code`). Adapters map classes to their wire status in one table each.
"""

from __future__ import annotations

import enum
from typing import ClassVar


class Status(enum.Enum):
    """Canonical RPC statuses; the value is the description xAI sends as `code`."""

    CANCELLED = "The operation was cancelled"
    INVALID_ARGUMENT = "Client specified an invalid argument"
    UNAUTHENTICATED = "The request does not have valid authentication credentials"
    PERMISSION_DENIED = "The caller does not have permission to execute the specified operation"
    NOT_FOUND = "Some requested entity was not found"
    RESOURCE_EXHAUSTED = "Some resource has been exhausted"
    UNIMPLEMENTED = "Operation is not implemented or not supported"
    UNAVAILABLE = "The service is currently unavailable"
    INTERNAL = "Internal error"

    @property
    def code(self) -> int:
        """The canonical number (google.rpc.Code), as in a `google.rpc.Status` (batch results)."""
        return _CODES[self.name]


_CODES = {"CANCELLED": 1, "INVALID_ARGUMENT": 3, "NOT_FOUND": 5, "PERMISSION_DENIED": 7, "RESOURCE_EXHAUSTED": 8,
          "UNIMPLEMENTED": 12, "INTERNAL": 13, "UNAVAILABLE": 14, "UNAUTHENTICATED": 16}  # fmt: skip


class LocalXAIError(Exception):
    """Base class; `message` is safe to show to the client unless `public` is false."""

    status: ClassVar[Status] = Status.INTERNAL
    public: ClassVar[bool] = True

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(LocalXAIError):
    status = Status.INVALID_ARGUMENT


class UnsupportedParameter(InvalidArgument):
    """A parameter this model or server does not honour; never dropped silently."""


class ContextLengthExceeded(InvalidArgument):
    def __init__(self, limit: int, count: int) -> None:
        super().__init__(f"This model's maximum prompt length is {limit} but the request contains {count} tokens.")
        self.limit = limit
        self.count = count


class IncorrectApiKey(InvalidArgument):
    """xAI answers a wrong key with 400, not 401."""


class MalformedBody(InvalidArgument):
    """The body is not JSON or a field has the wrong type (HTTP 422)."""


class UnsupportedMediaType(InvalidArgument):
    """Empty body or a Content-Type other than JSON (HTTP 415)."""


class PayloadTooLarge(InvalidArgument):
    """The request body is over the server's size limit (HTTP 413)."""


class Unauthenticated(LocalXAIError):
    status = Status.UNAUTHENTICATED


class PermissionDenied(LocalXAIError):
    status = Status.PERMISSION_DENIED


class NotFound(LocalXAIError):
    status = Status.NOT_FOUND


class ModelNotFound(NotFound):
    def __init__(self, model: str, served: list[str] | None = None) -> None:
        shown = model if len(model) <= 100 else model[:97] + "..."
        message = f"The model {shown} does not exist or your team does not have access to it."
        if served:
            message += f" This server serves: {', '.join(served)}."
        super().__init__(message)
        self.model = model


class Gone(NotFound):
    """Served by xAI once, not any more (HTTP 410): the client learns it at once."""


class MethodNotAllowed(LocalXAIError):
    status = Status.UNIMPLEMENTED


class ResourceExhausted(LocalXAIError):
    status = Status.RESOURCE_EXHAUSTED

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unavailable(LocalXAIError):
    status = Status.UNAVAILABLE

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Preempted(Unavailable):
    """A background generation (a batch request) gave its slot to an interactive request; whoever runs
    it starts it again. Never seen by a client."""


class Abandoned(LocalXAIError):
    """A deferred request whose server stopped while running it, time after time: not run again."""


class InternalError(LocalXAIError):
    """A bug or a failure the client cannot act on: its message goes to the log, not the wire."""

    public = False

    def __init__(self, message: str = "internal error") -> None:
        super().__init__(message)


def public_message(exc: BaseException | None, request_id: str = "") -> str:
    """What a client may read of `exc`: its message, or only "internal error" (with the request id)."""
    if isinstance(exc, LocalXAIError) and exc.public:
        return exc.message
    return f"internal error (request id {request_id})" if request_id else "internal error"


class ConfigError(Exception):
    """A startup problem the operator must fix (bad flag, missing file); never sent to clients."""
