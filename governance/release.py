"""Release: let out only approved avatars of consenting subjects, marked twice, in a signed folder.

``release(run_dir, to, gov, actor)`` reads the run manifest (``manifest.jsonl``) and releases an
image only if, now: its C2PA provenance is trusted, its consent record allows avatar-generation and
the image's prompt category, the record's ``max_released_avatars`` is not reached, and the latest
review decision on the file in the audit log is an approval by an approver (a later rejection
replaces it; a withdrawal fails the consent check). Everything else is left behind with its reason.

Each released image gets an invisible watermark (``governance.watermark``) and then a new C2PA
manifest: the signed original as its parentOf ingredient, ``c2pa.opened`` + ``c2pa.watermarked``,
the mark as a ``c2pa.soft-binding``, the approval (``com.idavatar.approval``), the consent record
id and ``cawg.training-mining``. The folder gets ``release.json`` (RFC 8785 canonical) and
``release.json.sig`` (Ed25519, the audit key), and the whole release is one ``release`` audit entry.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import shutil
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np
import rfc8785
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from governance import watermark
from governance.consent import ConsentRecord, Purpose
from governance.files import write_atomically
from governance.provenance import CONSENT_ASSERTION, TRAINED_ALGORITHMIC_MEDIA, ProvenanceResult, file_digest
from governance.registry import UnknownRecord
from governance.review_log import ReviewDecision, latest_decisions
from governance.roles import Actor, Permission

if TYPE_CHECKING:
    from governance.context import GovernanceContext

RELEASE_ACTION = "release"
RELEASE_MANIFEST = "release.json"
RELEASE_SIGNATURE = "release.json.sig"
RELEASE_SCHEMA = "idavatar-release/1"
RUN_MANIFEST = "manifest.jsonl"
APPROVAL_ASSERTION = "com.idavatar.approval"
TRAINING_MINING_ASSERTION = "cawg.training-mining"
TRAINING_MINING_USES = ("cawg.ai_generative_training", "cawg.ai_inference", "cawg.ai_training", "cawg.data_mining")
APPROVER_ROLES = ("approver", "admin")  # the review app's roles that may decide a release


def manifest_digest(canonical: bytes) -> str:
    """``sha256:<hex>`` of a release.json: the object of its release audit entry."""
    return "sha256:" + hashlib.sha256(canonical).hexdigest()


@dataclass
class LeftBehind:
    image: str
    reason: str
    line: int | None = None


@dataclass
class ReleaseResult:
    release_id: str
    folder: str | None            # None when nothing was released
    audit_entry: int
    items: list[dict[str, Any]]
    left_behind: list[LeftBehind] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"release_id": self.release_id, "folder": self.folder, "audit_entry": self.audit_entry,
                "released": len(self.items), "items": self.items,
                "left_behind": [asdict(left) for left in self.left_behind]}

    def summary(self) -> str:
        lines = [f"released {item['file']}  (item {item['item']}, approved by {item['approval']['actor']}, "
                 f"consent {item['consent_record_id']})" for item in self.items]
        lines += [f"left behind {left.image}: {left.reason}" for left in self.left_behind]
        where = f"into {self.folder}" if self.folder else "(nothing released, no folder written)"
        lines.append(f"release {self.release_id} {where}: {len(self.items)} released, "
                     f"{len(self.left_behind)} left behind; audit entry {self.audit_entry}")
        return "\n".join(lines)


def release(run_dir: str | Path, to: str | Path, gov: "GovernanceContext", *, actor: Actor,
            method: str = watermark.DEFAULT_METHOD) -> ReleaseResult:
    actor.require(Permission.SIGN)
    run_dir, to = Path(run_dir), Path(to)
    if to.exists() and (not to.is_dir() or any(to.iterdir())):
        raise FileExistsError(f"{to}: release folder exists and is not empty")
    if gov.audit_log.signing_key is None:
        raise ValueError(f"{gov.audit_log.where}: no audit signing key configured; a release is logged and signed")
    with gov.audit_log.exclusive():  # concurrent releases must not both count the same earlier ones
        result = _release(run_dir, to, gov, actor, method)
    gov.audit_log.checkpoint()
    return result


def _release(run_dir: Path, to: Path, gov: "GovernanceContext", actor: Actor, method: str) -> ReleaseResult:
    """The release itself: read the log, release what is eligible, log it; under the log's exclusive section."""
    verification = gov.verify_audit_log()
    if not verification.ok:
        raise ValueError(f"{gov.audit_log.where}: {verification}; its approvals cannot be trusted")
    entries = list(gov.audit_log.entries())
    decisions = latest_decisions(entries)
    signed = {entry["object"]: entry["seq"] for entry in entries
              if entry.get("action") == "provenance.sign" and entry.get("outcome") == "ok"}
    released_before = Counter(item["consent_record_id"] for entry in release_entries(entries)
                              for item in entry["details"]["items"])
    now = dt.datetime.now(dt.timezone.utc)
    release_id = f"urn:uuid:{uuid.uuid4()}"
    staging = to.with_name(f".{to.name}.{uuid.uuid4().hex}.partial")
    staging.mkdir(parents=True)
    batch = _Batch(gov, release_id, now, staging, method, signed)
    logged = False
    items: list[dict[str, Any]] = []
    left: list[LeftBehind] = []
    try:
        candidates, left = _read_run_manifest(run_dir)
        for line, entry, path in tqdm(candidates, desc="release", unit="image", disable=len(candidates) < 20):
            digest = file_digest(path)
            provenance = gov.verifier.verify(path)
            record, reason = _eligibility(provenance, digest, entry, gov, decisions, now)
            if reason is None and record.usage_limits.max_released_avatars is not None:
                count = released_before[record.record_id] + sum(i["consent_record_id"] == record.record_id
                                                                for i in items)
                if count >= record.usage_limits.max_released_avatars:
                    reason = (f"the consent record allows at most {record.usage_limits.max_released_avatars} "
                              f"released avatars and {count} are released")
            if reason is None:
                try:
                    items.append(batch.release_item(path, entry["image"], provenance, len(items) + 1, record,
                                                    decisions[digest]))
                except (watermark.WatermarkError, UnidentifiedImageError, OSError) as error:
                    reason = f"cannot watermark: {error}"
            if reason is not None:
                left.append(LeftBehind(entry["image"], reason, line))
        document = {"schema": RELEASE_SCHEMA, "release_id": release_id, "created": now.isoformat(),
                    "run": str(run_dir.resolve()), "released_by": actor.name, "watermark_method": method,
                    "items": items, "left_behind": [asdict(x) for x in left]}
        canonical = rfc8785.dumps(document)
        if items:
            write_atomically(staging / RELEASE_MANIFEST, canonical)
            write_atomically(staging / RELEASE_SIGNATURE,
                             base64.b64encode(gov.audit_log.signing_key.sign(canonical)) + b"\n")
        subjects = {item["subject"] for item in items}
        audit = gov.audit_log.append(
            actor=actor.name, role=actor.role.value, action=RELEASE_ACTION,
            subject=subjects.pop() if len(subjects) == 1 else None,
            object=manifest_digest(canonical), outcome="ok" if items else "refused",
            details={"release_id": release_id, "folder": to.name, "run": document["run"], "items": items,
                     "left_behind": [asdict(x) for x in left]})
        logged = True
        if items:
            if to.exists():
                to.rmdir()  # empty, checked above
            os.replace(staging, to)
    finally:
        # Once the release is in the audit log its files are kept, even if the move failed.
        if not logged or not items:
            shutil.rmtree(staging, ignore_errors=True)
    return ReleaseResult(release_id, str(to) if items else None, audit["seq"], items, left)


def release_entries(entries: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [entry for entry in entries if entry.get("action") == RELEASE_ACTION and entry.get("outcome") == "ok"]


def _read_run_manifest(run_dir: Path) -> tuple[list[tuple[int, dict, Path]], list[LeftBehind]]:
    manifest = run_dir / RUN_MANIFEST
    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest}: no run manifest")
    candidates, left, seen = [], [], set()
    root = run_dir.resolve()
    for line, text in enumerate(manifest.read_text().splitlines(), start=1):
        if not text.strip():
            continue
        try:
            entry = json.loads(text)
            image = entry["image"]
            path = (run_dir / image).resolve()
            if not isinstance(image, str) or not path.is_relative_to(root):
                raise ValueError(f"image path {image!r} leaves the run folder")
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            left.append(LeftBehind(f"{manifest}:{line}", f"bad manifest line: {error}", line))
            continue
        if path in seen:
            continue
        seen.add(path)
        if not path.is_file():
            left.append(LeftBehind(image, f"{path}: file not found", line))
        else:
            candidates.append((line, entry, path))
    return candidates, left


def _eligibility(provenance: ProvenanceResult, digest: str, entry: dict, gov: "GovernanceContext",
                 decisions: dict, now: dt.datetime) -> tuple[ConsentRecord | None, str | None]:
    """(the image's consent record, None) when it may be released now, else (record or None, reason)."""
    if not provenance.trusted:
        return None, f"provenance {provenance.status}: {provenance.detail}"
    try:
        record = gov.registry.get(provenance.consent_record_id or "")
    except UnknownRecord as error:
        return None, str(error.args[0])
    if entry.get("subject") not in (None, record.subject):
        return record, f"the manifest names subject {entry['subject']!r}, the consent record {record.subject!r}"
    refusal = record.decide(Purpose.AVATAR_GENERATION, now)
    if refusal is not None:
        return record, f"consent for avatar-generation {refusal.value} ({record.record_id})"
    category = record.usage_limits.category_refusal(str(entry.get("prompt_category")))
    if category is not None:
        return record, category
    decision = decisions.get(digest)
    if decision is None:
        return record, "not approved: no review decision on this file in the audit log"
    if not decision.approved:
        return record, (f"rejected by {decision.actor} at {decision.time.isoformat()}: {decision.reason} "
                        f"(audit entry {decision.seq})")
    if decision.role not in APPROVER_ROLES:
        return record, f"approved by {decision.actor}, whose role {decision.role!r} may not approve a release"
    return record, None


@dataclass
class _Batch:
    """What every item of one release shares."""

    gov: "GovernanceContext"
    release_id: str
    now: dt.datetime
    staging: Path
    method: str
    signed: dict[str, int]  # original's sha256 -> its provenance.sign entry

    def release_item(self, path: Path, source: str, original: ProvenanceResult, number: int, record: ConsentRecord,
                     decision: ReviewDecision) -> dict[str, Any]:
        """Watermark and re-sign one image into the staging folder; returns its release.json item."""
        gov, staging, now, release_id, method = self.gov, self.staging, self.now, self.release_id, self.method
        digest = decision.image_sha256  # the file approved, checked against the file before this call
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"))
        mark = watermark.new_mark(method)
        marked = staging / f".{number}.marked.png"
        Image.fromarray(watermark.embed(pixels, mark, method)).save(marked, "PNG")
        name = path.name if not (staging / path.name).exists() else f"{number:04d}_{path.name}"
        approval = {"actor": decision.actor, "role": decision.role, "time": decision.time.isoformat(),
                    "audit_entry": decision.seq, "entry_hash": decision.entry_hash}
        limits = record.usage_limits
        use = "allowed" if limits.training_mining_allowed else "notAllowed"
        manifest = {
            "claim_generator_info": [{"name": "idavatar-release", "version": RELEASE_SCHEMA}],
            "title": name,
            "assertions": [
                {"label": "c2pa.actions", "data": {"actions": [
                    {"action": "c2pa.opened", "parameters": {"ingredientIds": ["parent"]}},
                    {"action": "c2pa.watermarked", "digitalSourceType": TRAINED_ALGORITHMIC_MEDIA,
                     "softwareAgent": {"name": original.generator or "unknown",
                                       "version": original.model_version or "unknown"}}]}},
                {"label": "c2pa.soft-binding", "data": {
                    "alg": f"com.idavatar.imwatermark.{method}",
                    "blocks": [{"scope": {}, "value": base64.b64encode(mark).decode()}]}},
                {"label": APPROVAL_ASSERTION, "data": {**approval, "release_id": release_id, "item": number}},
                {"label": CONSENT_ASSERTION, "data": {"consent_record_id": record.record_id,
                                                      "signed_at": now.isoformat()}},
                {"label": TRAINING_MINING_ASSERTION,
                 "data": {"entries": {use_type: {"use": use} for use_type in TRAINING_MINING_USES}}},
            ],
        }
        gov.signer.sign_manifest(marked, staging / name, manifest, parent=path)
        marked.unlink()
        permission_until = now + limits.release_permission if limits.release_permission is not None else None
        return {"item": number, "file": name, "sha256": file_digest(staging / name), "source": source,
                "source_sha256": digest, "source_audit_entry": self.signed.get(digest), "subject": record.subject,
                "consent_record_id": record.record_id, "approval": approval, "watermark": mark.hex(),
                "watermark_method": method, "width": pixels.shape[1], "height": pixels.shape[0],
                "permission_until": permission_until.isoformat() if permission_until else None}
