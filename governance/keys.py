"""Master-key providers for the vault's envelope encryption.

A provider wraps and unwraps data keys; it never hands out its own key. ``LocalMasterKey`` keeps the
key in a file or an environment variable; a KMS would implement the same two methods.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MASTER_KEY_ENV = "GOVERNANCE_MASTER_KEY"
_NONCE_BYTES = 12


class WrongMasterKey(ValueError):
    pass


class MasterKeyProvider(Protocol):
    key_id: str

    def wrap(self, data_key: bytes, context: bytes) -> bytes: ...

    def unwrap(self, wrapped: bytes, context: bytes) -> bytes: ...


class LocalMasterKey:
    """An AES-256 master key held in this process; wraps with AES-256-GCM, ``context`` as associated data."""

    def __init__(self, key: bytes):
        if len(key) != 32:
            raise ValueError(f"a master key is 32 bytes, got {len(key)}")
        self._aead = AESGCM(key)
        self.key_id = hashlib.sha256(b"governance master key id\0" + key).hexdigest()[:16]

    @classmethod
    def generate_file(cls, path: str | Path) -> "LocalMasterKey":
        """Write a new random key to ``path`` (base64, mode 600) and return it; never overwrites."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        key = AESGCM.generate_key(bit_length=256)
        with open(path, "x") as handle:
            os.chmod(path, 0o600)
            handle.write(base64.b64encode(key).decode() + "\n")
        return cls(key)

    @classmethod
    def from_file(cls, path: str | Path) -> "LocalMasterKey":
        return cls(_decode(Path(path).read_text().strip(), f"master key file {path}"))

    @classmethod
    def from_env(cls, variable: str = MASTER_KEY_ENV) -> "LocalMasterKey":
        value = os.environ.get(variable)
        if not value:
            raise KeyError(f"environment variable {variable} (base64 master key) is not set")
        return cls(_decode(value.strip(), f"environment variable {variable}"))

    def wrap(self, data_key: bytes, context: bytes) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, data_key, context)

    def unwrap(self, wrapped: bytes, context: bytes) -> bytes:
        try:
            return self._aead.decrypt(wrapped[:_NONCE_BYTES], wrapped[_NONCE_BYTES:], context)
        except InvalidTag:
            raise WrongMasterKey(
                f"master key {self.key_id} cannot unwrap this data key (wrong master key, or the "
                "wrapped key was moved to another subject)") from None


def _decode(text: str, where: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except ValueError as error:
        raise ValueError(f"{where}: not base64 ({error})") from None
