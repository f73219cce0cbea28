"""Signed checkpoints of the audit log in the C2SP tlog-checkpoint format (a C2SP signed note).

    <origin>\\n<tree size>\\n<base64 root hash>\\n
    \\n
    \\u2014 <key name> <base64(4-byte key id || Ed25519 signature)>\\n
    \\u2014 <witness name> <base64(4-byte key id || 8-byte time || Ed25519 signature)>\\n   (cosignatures)

The log signs with its own key, named by the origin. Witnesses add C2SP tlog-cosignature/v1
lines. Keys are exchanged as C2SP/Go vkey strings, ``<name>+<hex key id>+<base64(algorithm || key)>``.

Checkpoints are kept apart from the log (one file per tree size, named by it), so a log cut behind
the latest checkpoint is detected: the checkpoint says the tree is bigger than the file.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from governance.files import write_atomically

ED25519 = 0x01
COSIGNATURE_V1 = 0x04
_SIGNATURE_PREFIX = "\u2014 "
_NAME = re.compile(r"[^\s+]+")
_FILE_NAME = re.compile(r"(\d{12})\.checkpoint")


class CheckpointError(ValueError):
    pass


def raw_public_key(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_id(name: str, public_key: Ed25519PublicKey, algorithm: int = ED25519) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + bytes([algorithm]) + raw_public_key(public_key)).digest()[:4]


def fingerprint(public_key: Ed25519PublicKey) -> str:
    """``sha256:<hex>`` of the raw public key: what an auditor compares out of band."""
    return "sha256:" + hashlib.sha256(raw_public_key(public_key)).hexdigest()


@dataclass(frozen=True)
class VerifierKey:
    """A named Ed25519 key, as in a vkey string; ``algorithm`` 0x01 signs notes, 0x04 cosigns them."""

    name: str
    public_key: Ed25519PublicKey
    algorithm: int = ED25519

    @property
    def id(self) -> bytes:
        return key_id(self.name, self.public_key, self.algorithm)

    def __str__(self) -> str:
        encoded = base64.b64encode(bytes([self.algorithm]) + raw_public_key(self.public_key)).decode()
        return f"{self.name}+{self.id.hex()}+{encoded}"

    @classmethod
    def parse(cls, vkey: str, algorithm: int | None = None) -> "VerifierKey":
        """The key in ``vkey``; with ``algorithm``, refused unless it is a key of that kind."""
        parts = vkey.strip().split("+", 2)  # base64 may itself hold "+"
        try:
            name, id_hex, encoded = parts
            raw = base64.b64decode(encoded, validate=True)
            key = cls(name, Ed25519PublicKey.from_public_bytes(raw[1:]), raw[0])
        except (ValueError, IndexError, binascii.Error):
            raise CheckpointError(f"{vkey!r} is not a vkey (<name>+<hex key id>+<base64 key>)") from None
        check_key_name(name)
        if key.algorithm not in (ED25519, COSIGNATURE_V1):
            raise CheckpointError(f"{vkey!r}: unknown key algorithm {key.algorithm:#04x}")
        if key.id.hex() != id_hex.lower():
            raise CheckpointError(f"{vkey!r}: key id {id_hex} does not match its name and key")
        if algorithm is not None and key.algorithm != algorithm:
            kind = {ED25519: "a log's note-signing key (0x01)", COSIGNATURE_V1: "a witness key (0x04)"}[algorithm]
            raise CheckpointError(f"{vkey!r}: not {kind}")
        return key


def check_key_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise CheckpointError(f"key name {name!r} must be non-empty, without spaces or '+'")
    return name


def cosignature_message(timestamp: int, body: str) -> bytes:
    return f"cosignature/v1\ntime {timestamp}\n{body}".encode()


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
    def parse_and_verify(cls, note: str, public_key: Ed25519PublicKey, origin: str | None = None) -> "Checkpoint":
        """The checkpoint, if ``note`` carries a valid signature by ``public_key`` named ``origin``
        (default: the note's own origin line)."""
        checkpoint, signatures = _parse(note)
        name = origin or checkpoint.origin
        if checkpoint.origin != name:
            raise CheckpointError(f"origin {checkpoint.origin!r}, expected {name!r}")
        expected_id = key_id(name, public_key)
        for signer, signature in signatures:
            if signer == name and signature[:4] == expected_id:
                try:
                    public_key.verify(signature[4:], checkpoint.body().encode())
                except InvalidSignature:
                    raise CheckpointError("signature invalid") from None
                return checkpoint
        raise CheckpointError(f"no signature by key {name!r} with id {expected_id.hex()}")


def _parse(note: str) -> tuple[Checkpoint, list[tuple[str, bytes]]]:
    body, separator, signature_block = note.partition("\n\n")
    lines = body.split("\n")
    if not separator or len(lines) < 3:
        raise CheckpointError("not a signed note (origin, size, root hash, blank line, signature)")
    origin, size, root = lines[:3]
    if not (size.isascii() and size.isdigit()):
        raise CheckpointError(f"tree size {size!r} is not a number")
    try:
        root_hash = base64.b64decode(root, validate=True)
    except binascii.Error:
        raise CheckpointError(f"root hash {root!r} is not base64") from None
    checkpoint = Checkpoint(origin, int(size), root_hash)
    if body + "\n" != checkpoint.body():
        raise CheckpointError("not a plain checkpoint (extension lines or non-canonical encoding)")
    signatures = []
    for line in signature_block.splitlines():
        name, _, encoded = line.removeprefix(_SIGNATURE_PREFIX).partition(" ")
        try:
            signature = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            raise CheckpointError(f"signature line {line!r} is not base64") from None
        if not line.startswith(_SIGNATURE_PREFIX) or len(signature) < 5:
            raise CheckpointError(f"{line!r} is not a signature line")
        signatures.append((name, signature))
    return checkpoint, signatures


def cosign(note: str, witness_name: str, witness_key: Ed25519PrivateKey, *, timestamp: int | None = None) -> str:
    """``note`` with a C2SP tlog-cosignature/v1 line by the witness added (the log's signature is kept)."""
    checkpoint, _ = _parse(note)
    check_key_name(witness_name)
    timestamp = int(time.time()) if timestamp is None else timestamp
    signature = (key_id(witness_name, witness_key.public_key(), COSIGNATURE_V1) + timestamp.to_bytes(8, "big")
                 + witness_key.sign(cosignature_message(timestamp, checkpoint.body())))
    return note + f"{_SIGNATURE_PREFIX}{witness_name} {base64.b64encode(signature).decode()}\n"


def cosigned_at(note: str, witness: VerifierKey) -> int | None:
    """The time (Unix seconds) of a valid cosignature by ``witness`` on ``note``, or None."""
    checkpoint, signatures = _parse(note)
    for name, signature in signatures:
        if name == witness.name and signature[:4] == witness.id and len(signature) == 4 + 8 + 64:
            timestamp = int.from_bytes(signature[4:12], "big")
            try:
                witness.public_key.verify(signature[12:], cosignature_message(timestamp, checkpoint.body()))
            except InvalidSignature:
                return None
            return timestamp
    return None


@dataclass(frozen=True)
class StoredCheckpoint:
    """A checkpoint note as a store holds it, with the tree size its storage name claims (None: no size)."""

    label: str
    claimed_size: int | None
    note: str


class CheckpointStore:
    """A folder of signed checkpoints, one file per tree size (``<size, 12 digits>.checkpoint``)."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

    def path_for(self, size: int) -> Path:
        return self.directory / f"{size:012d}.checkpoint"

    def write(self, checkpoint: Checkpoint, private_key: Ed25519PrivateKey) -> Path:
        """Store the signed checkpoint; an existing note of the same tree (with its cosignatures) is kept."""
        path = self.path_for(checkpoint.size)
        try:
            if path.read_text(encoding="utf-8").startswith(checkpoint.body() + "\n"):
                return path
        except (FileNotFoundError, UnicodeDecodeError):
            pass
        write_atomically(path, checkpoint.sign(private_key).encode("utf-8"))
        return path

    def paths(self) -> list[Path]:
        return sorted(self.directory.glob("*.checkpoint")) if self.directory.is_dir() else []

    def stored(self) -> Iterator[StoredCheckpoint]:
        for path in self.paths():
            match = _FILE_NAME.fullmatch(path.name)
            yield StoredCheckpoint(str(path), int(match.group(1)) if match else None,
                                   path.read_bytes().decode("utf-8", errors="replace"))
