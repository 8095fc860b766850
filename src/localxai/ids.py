"""The ids this server makes for what it stores (deferred requests, responses): UUIDs, as xAI's.
An id a client sends back is checked to be one before it reaches the database."""

from __future__ import annotations

import uuid


def new_id() -> str:
    return str(uuid.uuid4())


def is_id(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text
    except ValueError:
        return False
