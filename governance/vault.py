"""The encrypted photo vault: AES-256-GCM envelope encryption, one data key per subject.

Layout under the vault folder::

    keys/<subject>.key        the subject's data key, wrapped by the master key (JSON)
    keys/<subject>.shredded   tombstone written when the key was crypto-shredded (JSON)
    blobs/<subject>/<file_id> nonce || AES-256-GCM ciphertext; associated data = subject and file id

With a registry on a database server, the wrapped data keys live in that database instead
(``vault_keys.SqlKeyStore``), so every host shares one key per subject; the blobs stay files.

Backups copy ``blobs/`` only (``backup``): the data keys never leave ``keys/``, so shredding a
subject's key makes every copy of that subject's photos unreadable. Rotating the master key
re-wraps the data keys and leaves the photos as they are.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import uuid
from pathlib import Path

import rfc8785
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import TypeAdapter

from governance.audit_log import AuditLog
from governance.consent import Purpose, SubjectId
from governance.files import write_atomically
from governance.keys import MasterKeyProvider
from governance.registry import ConsentRefused, ConsentRegistry
from governance.roles import Actor, Permission
from governance.vault_keys import DataKeyStore, FileKeyStore, Tombstone, WrappedKey

_NONCE_BYTES = 12
_SUBJECT_CHECK = TypeAdapter(SubjectId)


class VaultError(Exception):
    pass


class KeyShredded(VaultError):
    pass


class TamperedBlob(VaultError):
    pass


def _blob_context(subject: str, file_id: str) -> bytes:
    return rfc8785.dumps({"purpose": "governance-vault photo", "subject": subject, "file_id": file_id})


def _key_context(subject: str) -> bytes:
    return rfc8785.dumps({"purpose": "governance-vault data key", "subject": subject})


class PhotoVault:
    def __init__(self, root: str | Path, master_key: MasterKeyProvider, registry: ConsentRegistry,
                 audit_log: AuditLog, keys: DataKeyStore | None = None):
        self.root = Path(root)
        self.master_key = master_key
        self.registry = registry
        self.audit_log = audit_log
        self.keys = keys or FileKeyStore(self.root / "keys")

    # -- paths ------------------------------------------------------------------------------------

    def _blob_dir(self, subject: str) -> Path:
        return self.root / "blobs" / _SUBJECT_CHECK.validate_python(subject)

    def _blob_path(self, subject: str, file_id: str) -> Path:
        if not file_id.isalnum():
            raise ValueError(f"file id {file_id!r} must be alphanumeric")
        return self._blob_dir(subject) / file_id

    # -- data keys --------------------------------------------------------------------------------

    def _data_key(self, subject: str, *, create: bool) -> bytes:
        subject = _SUBJECT_CHECK.validate_python(subject)
        stored = self.keys.get(subject)
        if stored is None and create:
            self.keys.create(self._wrap(subject, AESGCM.generate_key(bit_length=256), self.master_key))
            stored = self.keys.get(subject)  # a concurrent first put may have won: use its key
        if stored is None:
            tombstone = self.keys.tombstone(subject)
            if tombstone is not None:
                raise KeyShredded(f"subject {subject!r}: data key crypto-shredded at {tombstone.time} "
                                  f"by {tombstone.actor}; their photos are unreadable")
            raise VaultError(f"subject {subject!r}: no photos in the vault {self.root}")
        return self.master_key.unwrap(stored.wrapped_key, _key_context(subject))

    @staticmethod
    def _wrap(subject: str, data_key: bytes, master_key: MasterKeyProvider) -> WrappedKey:
        return WrappedKey(subject, master_key.key_id, master_key.wrap(data_key, _key_context(subject)))

    # -- the gate ---------------------------------------------------------------------------------

    def _require(self, actor: Actor, permission: Permission, action: str, subject: str | None, obj: str | None) -> None:
        try:
            actor.require(permission)
        except PermissionError as error:
            self._log(actor, action, subject, obj, "refused", {"reason": str(error)})
            raise

    def _gate(self, actor: Actor, action: str, subject: str, purpose: Purpose, obj: str | None) -> str:
        decision = self.registry.check(subject, purpose)
        if not decision.allowed:
            self._log(actor, action, subject, obj, "refused",
                      {"purpose": decision.purpose.value, "reason": decision.reason, "record_id": decision.record_id})
            raise ConsentRefused(decision)
        return decision.record_id

    def _log(self, actor: Actor, action: str, subject: str | None, obj: str | None, outcome: str,
             details: dict) -> None:
        self.audit_log.append(actor=actor.name, role=actor.role.value, action=action, subject=subject,
                              object=obj, outcome=outcome, details=details)

    # -- operations -------------------------------------------------------------------------------

    def put(self, subject: str, photo: bytes, *, purpose: Purpose | str, actor: Actor) -> str:
        """Encrypt and store ``photo``; consent for ``purpose`` must be in force. Returns the file id."""
        purpose = Purpose(purpose)
        self._require(actor, Permission.PUT, "vault.put", subject, None)
        record_id = self._gate(actor, "vault.put", subject, purpose, None)
        file_id = uuid.uuid4().hex
        data_key = self._data_key(subject, create=True)
        nonce = os.urandom(_NONCE_BYTES)
        ciphertext = AESGCM(data_key).encrypt(nonce, photo, _blob_context(subject, file_id))
        write_atomically(self._blob_path(subject, file_id), nonce + ciphertext)
        self._log(actor, "vault.put", subject, file_id, "ok",
                  {"purpose": purpose.value, "record_id": record_id, "bytes": len(photo)})
        return file_id

    def read(self, subject: str, file_id: str, *, purpose: Purpose | str, actor: Actor) -> bytes:
        """Decrypt one photo, through the consent gate for ``purpose``; the read is audited."""
        purpose = Purpose(purpose)
        self._require(actor, Permission.READ, "vault.read", subject, file_id)
        record_id = self._gate(actor, "vault.read", subject, purpose, file_id)
        data_key = self._data_key(subject, create=False)
        path = self._blob_path(subject, file_id)
        if not path.exists():
            raise VaultError(f"subject {subject!r}: no photo {file_id!r} in {self.root}")
        blob = path.read_bytes()
        try:
            photo = AESGCM(data_key).decrypt(blob[:_NONCE_BYTES], blob[_NONCE_BYTES:],
                                             _blob_context(subject, file_id))
        except InvalidTag:
            self._log(actor, "vault.read", subject, file_id, "error", {"reason": "authentication failed"})
            raise TamperedBlob(f"{path}: does not decrypt as photo {file_id!r} of {subject!r} "
                               "(edited, or moved from another name)") from None
        self._log(actor, "vault.read", subject, file_id, "ok", {"purpose": purpose.value, "record_id": record_id})
        return photo

    def list(self, subject: str) -> list[str]:
        directory = self._blob_dir(subject)
        return sorted(p.name for p in directory.iterdir() if p.name.isalnum()) if directory.is_dir() else []

    def withdraw(self, subject: str, *, actor: Actor, reason: str | None = None) -> list[str]:
        """Withdraw consent, crypto-shred the subject's data key and delete their blobs.

        Returns the ids of the consent records withdrawn. Backup copies of the blobs stay
        unreadable because the key is gone.
        """
        self._require(actor, Permission.WITHDRAW, "vault.withdraw", subject, None)
        now = dt.datetime.now(dt.timezone.utc)
        withdrawn = [r.record_id for r in self.registry.withdraw(subject, actor=actor.name, reason=reason, at=now)]
        shredded = self.keys.shred(_SUBJECT_CHECK.validate_python(subject),
                                   Tombstone(subject, now.isoformat(), actor.name))
        shutil.rmtree(self._blob_dir(subject), ignore_errors=True)
        self._log(actor, "vault.withdraw", subject, None, "ok",
                  {"records_withdrawn": withdrawn, "key_shredded": shredded, "reason": reason})
        return withdrawn

    def rotate_master_key(self, new_master_key: MasterKeyProvider, *, actor: Actor) -> int:
        """Re-wrap every data key under ``new_master_key``; photos are not re-encrypted. Returns the count.

        Keys already wrapped by the new master key are skipped, so an interrupted rotation can be rerun.
        """
        self._require(actor, Permission.ROTATE, "vault.rotate", None, None)
        rewrapped = 0
        for stored in list(self.keys):
            if stored.master_key_id == new_master_key.key_id:
                continue
            data_key = self.master_key.unwrap(stored.wrapped_key, _key_context(stored.subject))
            self.keys.replace(self._wrap(stored.subject, data_key, new_master_key))
            rewrapped += 1
        self._log(actor, "vault.rotate", None, new_master_key.key_id, "ok",
                  {"from": self.master_key.key_id, "to": new_master_key.key_id, "rewrapped": rewrapped})
        self.master_key = new_master_key
        return rewrapped

    def backup(self, destination: str | Path) -> Path:
        """Copy the encrypted blobs (never the keys) to ``destination``."""
        destination = Path(destination)
        shutil.copytree(self.root / "blobs", destination / "blobs", dirs_exist_ok=True)
        return destination
