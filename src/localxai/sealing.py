"""Opaque blobs that clients carry and send back (`reasoning.encrypted_content`): the content sealed
with AES-GCM under a server secret kept in the store, so every replica sharing the store can open
them. A blob that does not open (another provider's, a rotated secret, tampering) reads as nothing:
the caller drops it instead of failing the request."""

from __future__ import annotations

import base64
import binascii
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

PREFIX = "lx1."
NONCE_BYTES = 12


REASONING = b"localxai reasoning v1"
COMPACTION = b"localxai compaction v1"


class Sealer:
    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def seal(self, text: str, purpose: bytes) -> str:
        """`purpose` is bound into the blob: one kind of blob never opens as another."""
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, text.encode(), purpose)
        return PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode()

    def open(self, blob: object, purpose: bytes) -> str | None:
        """The content, or None for anything this server did not seal for `purpose`."""
        if not isinstance(blob, str) or not blob.startswith(PREFIX):
            return None
        try:
            raw = base64.urlsafe_b64decode(blob[len(PREFIX) :])
            return self._aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], purpose).decode()
        except (binascii.Error, ValueError, InvalidTag, UnicodeDecodeError):
            return None
