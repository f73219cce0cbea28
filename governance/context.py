"""One shared configuration for the governance layer, and the calls other parts make through it.

A ``governance.toml`` names the files; relative paths are relative to the TOML file's folder::

    registry = "consent.sqlite"
    vault = "vault"
    master_key = "keys/master.key"          # or leave out and set GOVERNANCE_MASTER_KEY (base64)
    audit_log = "audit/audit.jsonl"          # or "postgresql://user@host/db" (so may registry, review_store)
    audit_checkpoints = "audit/audit.jsonl.checkpoints"   # optional; default beside the log
    audit_key = "keys/audit-ed25519.pem"    # private: needed to append; leave out on read-only hosts
    audit_public_key = "keys/audit-ed25519.pub.pem"
    audit_origin = "idavatar-governance-audit/3f2a..."  # the log's name in its checkpoints; set by init
    signing_cert = "pki/signer.pem"
    signing_key = "pki/signer.key"
    trust_anchors = ["pki/root.pem"]
    controller = "Example Avatars Ltd"
    jurisdiction = "EU"
    review_store = "postgresql://..."       # optional; the review app's default is review.sqlite beside this file
"""

from __future__ import annotations

import datetime as dt
import os
import tomllib
from functools import cached_property
from pathlib import Path
from typing import Iterable

from pydantic import BaseModel, ConfigDict, Field

from governance.audit_log import (
    LEGACY_ORIGIN, AuditLog, AuditVerification, generate_key_pair, load_private_key, load_public_key,
)
from governance.checkpoint import VerifierKey, fingerprint
from governance.audit_sql import SqlAuditLog
from governance.compliance import ComplianceReport, audit_dir
from governance.consent import ConsentRecord, Purpose
from governance.database import StoreLocation, is_url
from governance.keys import MASTER_KEY_ENV, LocalMasterKey
from governance.pki import init_test_pki
from governance.provenance import ImageSigner, ProvenanceResult, ProvenanceVerifier, SigningIdentity, file_digest
from governance.registry import ConsentDecision, ConsentRefused, ConsentRegistry
from governance.roles import Actor, Permission
from governance.vault import PhotoVault
from governance.vault_keys import SqlKeyStore

CONFIG_ENV = "GOVERNANCE_CONFIG"
CONFIG_NAME = "governance.toml"


class GovernanceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    registry: StoreLocation
    vault: Path
    master_key: Path | None = None
    audit_log: StoreLocation
    audit_checkpoints: Path | None = None
    audit_key: Path | None = None
    audit_public_key: Path
    audit_origin: str = LEGACY_ORIGIN
    signing_cert: Path | None = None
    signing_key: Path | None = None
    trust_anchors: list[Path] = Field(default_factory=list)
    controller: str = "idavatar operator"
    jurisdiction: str = "EU"
    review_store: StoreLocation | None = None

    def resolved(self, base: Path) -> "GovernanceConfig":
        def resolve(value):
            if isinstance(value, Path):
                return value if value.is_absolute() else base / value
            if isinstance(value, list):
                return [resolve(item) for item in value]
            return value
        return GovernanceConfig(**{name: resolve(value) for name, value in self})

    def to_toml(self) -> str:
        def encode(value) -> str:
            if isinstance(value, list):
                return "[" + ", ".join(encode(item) for item in value) + "]"
            return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
        return "".join(f"{name} = {encode(value)}\n" for name, value in self if value is not None)


class GovernanceContext:
    """The registry, vault, audit log and provenance tools of one configuration."""

    def __init__(self, config: GovernanceConfig):
        self.config = config

    # -- loading ----------------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | Path | None = None) -> "GovernanceContext":
        """Load ``path``, else ``$GOVERNANCE_CONFIG``, else ``./governance.toml``."""
        path = Path(path or os.environ.get(CONFIG_ENV) or CONFIG_NAME)
        if not path.is_file():
            raise FileNotFoundError(f"governance config {path} not found (set {CONFIG_ENV} or run "
                                    "`python -m governance init DIR`)")
        try:
            raw = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as error:
            raise ValueError(f"{path}: not valid TOML ({error})") from None
        return cls(GovernanceConfig.model_validate(raw).resolved(path.resolve().parent))

    @classmethod
    def init(cls, directory: str | Path, *, controller: str = "idavatar operator",
             jurisdiction: str = "EU") -> "GovernanceContext":
        """Create a new workspace in ``directory``: config, master key, audit key pair, test PKI."""
        directory = Path(directory)
        config_path = directory / CONFIG_NAME
        if config_path.exists():
            raise FileExistsError(f"{config_path} already exists")
        (directory / "keys").mkdir(parents=True, exist_ok=True)
        LocalMasterKey.generate_file(directory / "keys" / "master.key")
        audit_key = generate_key_pair(directory / "keys" / "audit-ed25519.pem",
                                      directory / "keys" / "audit-ed25519.pub.pem")
        # C2SP wants an origin unique to each log: the key's fingerprint makes it so.
        origin = f"{LEGACY_ORIGIN}/{fingerprint(audit_key.public_key()).removeprefix('sha256:')[:16]}"
        init_test_pki(directory / "pki")
        config = GovernanceConfig(
            registry=Path("consent.sqlite"), vault=Path("vault"), master_key=Path("keys/master.key"),
            audit_log=Path("audit/audit.jsonl"), audit_key=Path("keys/audit-ed25519.pem"),
            audit_public_key=Path("keys/audit-ed25519.pub.pem"), audit_origin=origin,
            signing_cert=Path("pki/signer.pem"), signing_key=Path("pki/signer.key"),
            trust_anchors=[Path("pki/root.pem")], controller=controller, jurisdiction=jurisdiction)
        config_path.write_text(config.to_toml())
        return cls.load(config_path)

    # -- components -------------------------------------------------------------------------------

    @cached_property
    def registry(self) -> ConsentRegistry:
        return ConsentRegistry(self.config.registry)

    @cached_property
    def audit_log(self) -> AuditLog | SqlAuditLog:
        key = load_private_key(self.config.audit_key) if self.config.audit_key else None
        public_key = load_public_key(self.config.audit_public_key)
        if is_url(self.config.audit_log):
            return SqlAuditLog(self.config.audit_log, signing_key=key, public_key=public_key,
                               origin=self.config.audit_origin)
        return AuditLog(self.config.audit_log, signing_key=key, checkpoint_dir=self.config.audit_checkpoints,
                        public_key=public_key, origin=self.config.audit_origin)

    @property
    def audit_vkey(self) -> VerifierKey:
        """The log's public key as a C2SP vkey string's parts (what auditors pin)."""
        return VerifierKey(self.config.audit_origin, self.audit_log.public_key)

    def master_key(self) -> LocalMasterKey:
        if self.config.master_key is not None:
            return LocalMasterKey.from_file(self.config.master_key)
        return LocalMasterKey.from_env(MASTER_KEY_ENV)

    @cached_property
    def vault(self) -> PhotoVault:
        # With the registry on a server, the data keys go there too: one key per subject for every host.
        keys = SqlKeyStore(self.config.registry) if is_url(self.config.registry) else None
        return PhotoVault(self.config.vault, self.master_key(), self.registry, self.audit_log, keys)

    @cached_property
    def signer(self) -> ImageSigner:
        if not (self.config.signing_cert and self.config.signing_key):
            raise ValueError("signing_cert and signing_key must be configured to sign images")
        return ImageSigner(SigningIdentity.from_files(self.config.signing_cert, self.config.signing_key))

    @cached_property
    def verifier(self) -> ProvenanceVerifier:
        return ProvenanceVerifier(self.config.trust_anchors)

    # -- the calls other parts make ---------------------------------------------------------------

    def _log(self, actor: Actor, action: str, **fields) -> None:
        self.audit_log.append(actor=actor.name, role=actor.role.value, action=action, **fields)

    def record_consent(self, record: ConsentRecord, *, actor: Actor) -> ConsentRecord:
        """Store a consent record (permission ``record``) and log it."""
        actor.require(Permission.RECORD)
        self.registry.add(record)
        self._log(actor, "consent.record", subject=record.subject, object=record.record_id,
                  details={"purposes": [p.value for p in record.purposes]})
        return record

    def authorize(self, subject: str, purpose: Purpose | str, *, actor: Actor) -> str:
        """The consent gate with an audit entry; returns the consent record id or raises ConsentRefused."""
        decision = self.registry.check(subject, purpose)
        self._log(actor, "consent.check", subject=subject, object=decision.record_id,
                  outcome="ok" if decision.allowed else "refused",
                  details={"purpose": decision.purpose.value, "reason": decision.reason})
        if not decision.allowed:
            raise ConsentRefused(decision)
        return decision.record_id

    def sign_output(self, image: str | Path, *, subject: str, consent_record_id: str, generator: str,
                    model_version: str, actor: Actor, dest: str | Path | None = None) -> Path:
        """Sign a generated image with C2PA (in place unless ``dest``) and append its audit entry.

        The consent record must belong to ``subject`` and allow avatar-generation now.
        """
        actor.require(Permission.SIGN)
        record = self.registry.get(consent_record_id)
        now = dt.datetime.now(dt.timezone.utc)
        if record.subject != subject:
            reason = f"consent record belongs to {record.subject!r}"
        else:
            refusal = record.decide(Purpose.AVATAR_GENERATION, now)
            reason = refusal.value if refusal else None
        if reason is not None:
            self._log(actor, "provenance.sign", subject=subject, object=str(image), outcome="refused",
                      details={"reason": reason})
            raise ConsentRefused(ConsentDecision(subject, Purpose.AVATAR_GENERATION, now, False, reason,
                                                 consent_record_id))
        try:
            signed = self.signer.sign(image, dest, generator=generator, model_version=model_version,
                                      consent_record_id=consent_record_id, signed_at=now)
        except Exception as error:  # any failure leaves its trace before it propagates
            self._log(actor, "provenance.sign", subject=subject, object=str(image), outcome="error",
                      details={"reason": f"{type(error).__name__}: {error}", "consent_record_id": consent_record_id})
            raise
        self._log(actor, "provenance.sign", subject=subject, object=file_digest(signed),
                  details={"file": signed.name, "consent_record_id": consent_record_id,
                           "generator": generator, "model_version": model_version, "signed_at": now.isoformat()})
        return signed

    def consent_status(self, subject: str, at: dt.datetime | None = None) -> dict[str, ConsentDecision]:
        return self.registry.status(subject, at)

    def verify_provenance(self, paths: Iterable[str | Path]) -> list[ProvenanceResult]:
        return self.verifier.verify_many(paths)

    def verify_audit_log(self) -> AuditVerification:
        return self.audit_log.verify()

    def audit_dir(self, folder: str | Path) -> ComplianceReport:
        return audit_dir(folder, verifier=self.verifier, audit_log=self.audit_log, registry=self.registry)
