"""C2PA provenance for generated images (c2pa-python): sign, and verify against configured trust anchors.

A signed image carries a ``c2pa.actions`` assertion (``c2pa.created``, digital source type
trainedAlgorithmicMedia, the generator and model version) and ``com.idavatar.consent``, which
references the consent record id and the signing time — never the photo, an embedding or any other
biometric data.

Verification reports one of five statuses. Only ``trusted`` passes: the C2PA reader says ``Valid``
for a correct signature from an unknown root, and an image library's re-save drops the manifest
altogether, so ``untrusted`` and ``no-manifest`` are failures like ``tampered`` (hashes or signature
do not match). ``unreadable`` is a file that cannot be read or parsed at all (I/O error, empty,
truncated, not the image type its name says, unsupported type).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import c2pa
from tqdm import tqdm

TRAINED_ALGORITHMIC_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
CONSENT_ASSERTION = "com.idavatar.consent"
STATUSES = ("trusted", "untrusted", "tampered", "no-manifest", "unreadable")
# Reader errors from a signature check; every other reader error is about reading or parsing the bytes.
_SIGNATURE_ERRORS = (c2pa.C2paError.Signature, c2pa.C2paError.Verify)
MIME_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}


def mime_type(path: Path) -> str:
    try:
        return MIME_TYPES[path.suffix.lower()]
    except KeyError:
        raise ValueError(f"{path}: unsupported image type (expected one of {sorted(MIME_TYPES)})") from None


def file_digest(path: str | Path) -> str:
    """``sha256:<hex>`` of a file: how the audit log names a signed image."""
    with open(path, "rb") as handle:
        return "sha256:" + hashlib.file_digest(handle, "sha256").hexdigest()


@dataclass(frozen=True)
class SigningIdentity:
    """A certificate chain (PEM, leaf first) and its private key (PEM); ES256 by default."""

    cert_chain: bytes
    private_key: bytes
    algorithm: c2pa.C2paSigningAlg = c2pa.C2paSigningAlg.ES256

    @classmethod
    def from_files(cls, cert_chain: str | Path, private_key: str | Path) -> "SigningIdentity":
        return cls(Path(cert_chain).read_bytes(), Path(private_key).read_bytes())


class ImageSigner:
    """Signs generated images. No timestamp authority (offline); thumbnail off by default (~60 ms, 2x size)."""

    def __init__(self, identity: SigningIdentity, *, thumbnail: bool = False):
        # One signer serves every image (building it parses the key and chain each time).
        self._signer = c2pa.Signer.from_info(
            c2pa.C2paSignerInfo(identity.algorithm, identity.cert_chain, identity.private_key, None))
        self._context = c2pa.Context(c2pa.Settings.from_dict({"builder": {"thumbnail": {"enabled": thumbnail}}}))

    def sign(self, source: str | Path, dest: str | Path | None = None, *, generator: str, model_version: str,
             consent_record_id: str, signed_at: dt.datetime | None = None) -> Path:
        """Sign ``source`` into ``dest`` (default: in place, replaced atomically) and return the path."""
        source = Path(source)
        dest = Path(dest) if dest is not None else source
        signed_at = signed_at or dt.datetime.now(dt.timezone.utc)
        manifest = {
            "claim_generator_info": [{"name": generator, "version": model_version}],
            "title": dest.name,
            "assertions": [
                {"label": "c2pa.actions", "data": {"actions": [{
                    "action": "c2pa.created", "digitalSourceType": TRAINED_ALGORITHMIC_MEDIA,
                    "softwareAgent": {"name": generator, "version": model_version}}]}},
                {"label": CONSENT_ASSERTION, "data": {
                    "consent_record_id": consent_record_id, "signed_at": signed_at.isoformat()}},
            ],
        }
        return self.sign_manifest(source, dest, manifest)

    def sign_manifest(self, source: str | Path, dest: str | Path, manifest: dict, *,
                      parent: str | Path | None = None) -> Path:
        """Sign ``source`` into ``dest`` with ``manifest``; ``parent`` (a signed image) becomes its
        parentOf ingredient, which actions reference with ``"ingredientIds": ["parent"]``."""
        source, dest = Path(source), Path(dest)
        temporary = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.tmp")
        try:
            with open(source, "rb") as unsigned, open(temporary, "w+b") as signed, \
                    c2pa.Builder(manifest, context=self._context) as builder:
                if parent is not None:
                    with open(parent, "rb") as ingredient:
                        builder.add_ingredient({"title": Path(parent).name, "relationship": "parentOf",
                                                "label": "parent"}, mime_type(Path(parent)), ingredient)
                builder.sign(self._signer, mime_type(source), unsigned, signed)
            os.replace(temporary, dest)
        finally:
            temporary.unlink(missing_ok=True)
        return dest


@dataclass
class ProvenanceResult:
    path: str
    status: str  # one of STATUSES
    consent_record_id: str | None = None
    signed_at: str | None = None
    generator: str | None = None
    model_version: str | None = None
    ai_generated: bool = False
    detail: str = ""
    codes: list[str] = field(default_factory=list)
    watermark: str | None = None  # without a manifest: the release item its watermark names

    @property
    def trusted(self) -> bool:
        return self.status == "trusted"

    def to_dict(self) -> dict:
        return asdict(self)


class ProvenanceVerifier:
    """Verifies images against the given trust anchors (PEM files or bytes)."""

    def __init__(self, trust_anchors: Iterable[str | Path | bytes], *,
                 watermark_lookup: Callable[[Path], object | None] | None = None):
        """``watermark_lookup(path)`` names the release item a manifest-less image's watermark carries."""
        self._watermark_lookup = watermark_lookup
        pem = b"".join(a if isinstance(a, bytes) else Path(a).read_bytes() for a in trust_anchors)
        if not pem:
            raise ValueError("at least one trust anchor is needed to verify provenance")
        self._context = c2pa.Context(c2pa.Settings.from_dict(
            {"trust": {"trust_anchors": pem.decode()}, "verify": {"verify_trust": True}}))

    def verify_many(self, paths: Iterable[str | Path]) -> list[ProvenanceResult]:
        paths = list(paths)
        return [self.verify(path) for path in tqdm(paths, desc="provenance", unit="image", disable=len(paths) < 50)]

    def verify(self, path: str | Path) -> ProvenanceResult:
        path = Path(path)
        try:
            with open(path, "rb") as stream:  # streamed: the reader never needs the whole file in memory
                reader = c2pa.Reader.try_create(mime_type(path), stream, None, self._context)
        except (OSError, ValueError) as error:
            return ProvenanceResult(str(path), "unreadable", detail=f"cannot read: {error}")
        except _SIGNATURE_ERRORS as error:
            return ProvenanceResult(str(path), "tampered", detail=f"signature does not validate: {error}")
        except c2pa.C2paError as error:
            return ProvenanceResult(str(path), "unreadable", detail=f"cannot parse: {error}")
        if reader is None:
            trace = self._watermark_lookup(path) if self._watermark_lookup else None
            return ProvenanceResult(str(path), "no-manifest", detail="no C2PA manifest (stripped or never signed)",
                                    watermark=str(trace) if trace else None)
        with reader:
            return _result(path, reader.get_validation_state(), reader.get_validation_results() or {},
                           reader.get_active_manifest() or {})


def _result(path: Path, state: str | None, results: dict, manifest: dict) -> ProvenanceResult:
    active = results.get("activeManifest", {})
    failures = [item["code"] for item in active.get("failure", [])]
    informational = [item["code"] for item in active.get("informational", [])]
    # signingCredential.* failures (unknown root, expired, revoked) are about who signed, not what.
    tampering = [code for code in failures if not code.startswith("signingCredential.")]
    if state == "Trusted":
        status, detail = "trusted", "signature valid, certificate chains to a configured trust anchor"
    elif tampering or (state == "Invalid" and not failures):
        status, detail = "tampered", "manifest or pixels do not match the signature: " + ", ".join(tampering)
    else:
        status = "untrusted"
        detail = "signature valid, but the signing certificate is not trusted: " + ", ".join(failures)
    assertions = {a["label"]: a.get("data", {}) for a in manifest.get("assertions", [])}
    consent = assertions.get(CONSENT_ASSERTION, {})
    actions = (assertions.get("c2pa.actions.v2") or assertions.get("c2pa.actions") or {}).get("actions", [])
    # c2pa.created on an original; on a release, the c2pa.watermarked action that follows c2pa.opened
    created = next((a for a in actions if a.get("digitalSourceType") == TRAINED_ALGORITHMIC_MEDIA), {})
    agent = created.get("softwareAgent") or {}
    return ProvenanceResult(
        str(path), status, consent_record_id=consent.get("consent_record_id"), signed_at=consent.get("signed_at"),
        generator=agent.get("name"), model_version=agent.get("version"),
        ai_generated=created.get("digitalSourceType") == TRAINED_ALGORITHMIC_MEDIA,
        detail=detail, codes=failures + informational)
