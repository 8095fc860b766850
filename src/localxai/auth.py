"""API keys: parsing the bearer header and finding the caller's key.

Keys come from flags/environment (compared as hashes, in constant time) and from the store
(`localxai keys create`, looked up by hash). Open access (any bearer token accepted) is decided once,
when the server starts with no key at all; keys created or revoked later never switch it on or off.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import Iterable
from dataclasses import dataclass

from localxai.errors import IncorrectApiKey, PermissionDenied, Unauthenticated
from localxai.store.store import Store, key_hash, redact


def _short_redact(key: str) -> str:
    """xAI's form in the wrong-key message: `xa***Ju`."""
    return f"{key[:2]}***{key[-2:]}" if len(key) > 4 else "***"


@dataclass(frozen=True)
class ApiKey:
    """The caller's key as the server knows it."""

    key_id: str
    redacted: str
    name: str
    created: int
    modified: int
    models: tuple[str, ...] | None = None  # None: every model
    rpm: int | None = None
    tpm: int | None = None
    tools: tuple[str, ...] | None = None  # server-side tool kinds it may use; None: every one served
    operator: bool = False  # a key the server was started with (or open access): it may manage models

    def may_use(self, model: str) -> bool:
        return self.models is None or model in self.models

    def may_run(self, tool: str) -> bool:
        return self.tools is None or tool in self.tools

    @property
    def acls(self) -> list[str]:
        models = ["api-key:model:*"] if self.models is None else [f"api-key:model:{m}" for m in self.models]
        return [*models, "api-key:endpoint:*"]


def is_open_access(keys: Iterable[str], store: Store) -> bool:
    """No key configured and none stored: any bearer token is accepted (decided once, at start-up)."""
    return not tuple(keys) and not store.has_active_keys()


class Authenticator:
    def __init__(self, keys: Iterable[str], store: Store | None = None, open_access: bool = False) -> None:
        self._digests = [hashlib.sha256(k.encode()).digest() for k in keys]
        self._store = store
        self.open_access = open_access
        self._started = int(time.time())

    async def authenticate(self, authorization: str | None) -> ApiKey:
        if not authorization:
            raise Unauthenticated("No credentials presented.")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("The Authorization header must be 'Bearer <API key>'.")
        digest = hashlib.sha256(token.encode()).digest()
        matched = False
        for known in self._digests:  # no early exit: timing does not tell which key matched
            matched |= hmac.compare_digest(known, digest)
        if matched:
            return self._static(token, "configured key")
        if self._store is not None:
            record = await asyncio.to_thread(self._store.key_by_hash, key_hash(token))
            if record is not None:
                if record.disabled:
                    raise PermissionDenied(f"The API key {record.redacted} is disabled.")
                return ApiKey(
                    key_id=record.id,
                    redacted=record.redacted,
                    name=record.name,
                    created=int(record.created_at),
                    modified=int(record.modified_at),
                    models=record.models,
                    rpm=record.rpm,
                    tpm=record.tpm,
                    tools=record.tools,
                )
        if self.open_access:
            return self._static(token, "open access (no keys configured)")
        raise IncorrectApiKey(
            f"Incorrect API key provided: {_short_redact(token)}. "
            "Keys are configured by the operator of this localxai server."
        )

    def _static(self, token: str, name: str) -> ApiKey:
        key_id = "key_" + hashlib.sha256(token.encode()).hexdigest()[:16]
        return ApiKey(
            key_id=key_id,
            redacted=redact(token),
            name=name,
            created=self._started,
            modified=self._started,
            operator=True,
        )
