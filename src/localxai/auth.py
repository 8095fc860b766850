"""API keys: parsing the bearer header, constant-time verification, redaction."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterable
from dataclasses import dataclass

from localxai.errors import IncorrectApiKey, Unauthenticated


def redact(key: str) -> str:
    """`xai-...b14o` as in GET /v1/api-key; short keys show less."""
    if len(key) <= 8:
        return "***"
    return f"{key[:4]}...{key[-4:]}"


def _short_redact(key: str) -> str:
    """xAI's form in the wrong-key message: `xa***Ju`."""
    return f"{key[:2]}***{key[-2:]}" if len(key) > 4 else "***"


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


@dataclass(frozen=True)
class ApiKey:
    """The caller's key as the server knows it."""

    key_id: str
    redacted: str
    name: str
    created: int


class KeyChecker:
    """Verifies bearer tokens against the configured keys (compared as hashes, in constant time).

    With no keys configured every bearer token is accepted (open access on loopback).
    """

    def __init__(self, keys: Iterable[str]) -> None:
        self._digests = [_digest(k) for k in keys]
        self._started = int(time.time())

    @property
    def open_access(self) -> bool:
        return not self._digests

    def check(self, authorization: str | None) -> ApiKey:
        if not authorization:
            raise Unauthenticated("No credentials presented.")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("The Authorization header must be 'Bearer <API key>'.")
        digest = _digest(token)
        matched = False
        for known in self._digests:  # no early exit: timing does not tell which key matched
            matched |= hmac.compare_digest(known, digest)
        if self._digests and not matched:
            raise IncorrectApiKey(
                f"Incorrect API key provided: {_short_redact(token)}. "
                "Keys are configured by the operator of this localxai server."
            )
        name = "open access (no keys configured)" if self.open_access else "configured key"
        return ApiKey(key_id=digest.hex()[:16], redacted=redact(token), name=name, created=self._started)
