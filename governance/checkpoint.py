"""Signed checkpoints of the audit log in the C2SP tlog-checkpoint format (a C2SP signed note).

    <origin>\\n<tree size>\\n<base64 root hash>\\n
    \\n
    \\u2014 <key name> <base64(4-byte key id || Ed25519 signature)>\\n

Checkpoints are kept apart from the log (one file per tree size), so a log cut behind the latest
checkpoint is detected: the checkpoint says the tree is bigger than the file.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from governance.files import write_atomically

_ED25519_ALGORITHM = b"\x01"
_SIGNATURE_PREFIX = "\u2014 "


class CheckpointError(ValueError):
    pass


def key_id(name: str, public_key: Ed25519PublicKey) -> bytes:
    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(name.encode() + b"\n" + _ED25519_ALGORITHM + raw).digest()[:4]


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root_hash: bytes

    def body(self) -> str:
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root_hash).decode()}\n"

    def sign(self, private_key: Ed25519PrivateKey) -> str:
        """The signed note; the key name is the origin."""
        signature = key_id(self.origin, private_key.public_key()) + private_key.sign(self.body().encode())
        return f"{self.body()}\n{_SIGNATURE_PREFIX}{self.origin} {base64.b64encode(signature).decode()}\n"

    @classmethod
    def parse_and_verify(cls, note: str, public_key: Ed25519PublicKey) -> "Checkpoint":
        body, separator, signatures = note.partition("\n\n")
        lines = body.split("\n")
        if not separator or len(lines) < 3:
            raise CheckpointError("not a signed note (origin, size, root hash, blank line, signature)")
        origin, size, root = lines[:3]
        if not size.isdigit():
            raise CheckpointError(f"tree size {size!r} is not a number")
        expected_id = key_id(origin, public_key)
        for line in signatures.splitlines():
            name, _, encoded = line.removeprefix(_SIGNATURE_PREFIX).partition(" ")
            signature = base64.b64decode(encoded)
            if line.startswith(_SIGNATURE_PREFIX) and name == origin and signature[:4] == expected_id:
                try:
                    public_key.verify(signature[4:], (body + "\n").encode())
                except InvalidSignature:
                    raise CheckpointError("signature invalid") from None
                return cls(origin, int(size), base64.b64decode(root))
        raise CheckpointError(f"no signature by key {origin!r} with id {expected_id.hex()}")


class CheckpointStore:
    """A folder of signed checkpoints, one file per tree size."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

    def write(self, checkpoint: Checkpoint, private_key: Ed25519PrivateKey) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{checkpoint.size:012d}.checkpoint"
        write_atomically(path, checkpoint.sign(private_key).encode("utf-8"))
        return path

    def paths(self) -> list[Path]:
        return sorted(self.directory.glob("*.checkpoint")) if self.directory.is_dir() else []
