"""Checks after a release: which release item a bare image is (its watermark), and a release folder's audit.

``trace_watermark`` reads an image that has lost its C2PA manifest (an image library's re-save) and
looks its bits up among the marks the audit log's release entries handed out: at the image's own
size and resized to each released item's size, which undoes a rescale.

``audit_release_dir`` (what ``audit-dir`` runs on a folder holding ``release.json``) passes only when
``release.json`` is canonical, its signature verifies with the audit key, it is the one its
``release`` audit entry names, and the folder holds exactly its files, unchanged, each with a
trusted manifest for the listed consent record and a release permission not yet expired.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import rfc8785
from cryptography.exceptions import InvalidSignature
from PIL import Image, UnidentifiedImageError

from governance import watermark
from governance.audit_log import AuditLog, AuditVerification
from governance.compliance import ComplianceReport, ImageCheck, folder_files
from governance.consent import Purpose
from governance.provenance import ProvenanceVerifier, file_digest
from governance.registry import ConsentRegistry, UnknownRecord
from governance.release import RELEASE_MANIFEST, RELEASE_SIGNATURE, manifest_digest, release_entries


@dataclass(frozen=True)
class WatermarkTrace:
    release_id: str
    item: int
    release_entry: int               # the release's audit entry
    file: str
    source: str                      # the signed original: the run folder / its manifest's image path
    source_audit_entry: int | None   # the original's provenance.sign entry

    def __str__(self) -> str:
        return (f"watermark → release {self.release_id} item {self.item} ({self.file}; release audit entry "
                f"{self.release_entry}; original {self.source}, audit entry {self.source_audit_entry})")


def trace_watermark(path: str | Path, entries: Iterable[dict[str, Any]]) -> WatermarkTrace | None:
    """The release item whose watermark ``path`` carries, or None (unmarked, unreadable or too damaged)."""
    marks: dict[str, dict[tuple[int, int], dict[bytes, WatermarkTrace]]] = defaultdict(lambda: defaultdict(dict))
    for entry in release_entries(entries):
        for item in entry["details"]["items"]:
            marks[item["watermark_method"]][(item["width"], item["height"])][bytes.fromhex(item["watermark"])] = \
                WatermarkTrace(entry["details"]["release_id"], item["item"], entry["seq"], item["file"],
                               str(Path(entry["details"]["run"]) / item["source"]), item["source_audit_entry"])
    if not marks:
        return None
    try:
        with Image.open(path) as image:
            picture = image.convert("RGB")
    except (OSError, UnidentifiedImageError):
        return None
    return next((found for method, by_size in marks.items()
                 if (found := watermark.find(picture, by_size, method)) is not None), None)


def audit_release_dir(folder: Path, *, verifier: ProvenanceVerifier, audit_log: AuditLog,
                      registry: ConsentRegistry, verification: AuditVerification | None = None) -> ComplianceReport:
    verification = verification or audit_log.verify()
    head = ImageCheck(RELEASE_MANIFEST, "-")
    report = ComplianceReport(str(folder), str(verification), verification.ok, [head])
    try:
        canonical = (folder / RELEASE_MANIFEST).read_bytes()
        document = json.loads(canonical)
    except (OSError, ValueError) as error:
        head.problems.append(f"unreadable: {error}")
        return report
    if rfc8785.dumps(document) != canonical:
        head.problems.append("not RFC 8785 canonical JSON")
    try:
        signature = base64.b64decode((folder / RELEASE_SIGNATURE).read_text().strip(), validate=True)
        audit_log.public_key.verify(signature, canonical)
    except (OSError, ValueError, InvalidSignature):
        head.problems.append(f"{RELEASE_SIGNATURE}: missing or not a valid Ed25519 signature by the audit key")
    entry = next((e for e in release_entries(audit_log.entries())
                  if e["details"]["release_id"] == document.get("release_id")), None)
    if entry is None:
        head.problems.append(f"no release entry for {document.get('release_id')!r} in the audit log")
    elif entry["object"] != manifest_digest(canonical):
        head.problems.append(f"differs from the release.json that audit entry {entry['seq']} records")
    head.audit_entry = entry["seq"] if entry else None
    listed = {item["file"]: item for item in document.get("items", [])}
    present = {path.relative_to(folder).as_posix(): not_checked for path, not_checked in folder_files(folder)}
    present.pop(RELEASE_MANIFEST, None)
    present.pop(RELEASE_SIGNATURE, None)
    now = dt.datetime.now(dt.timezone.utc)
    for name in sorted(present.keys() | listed.keys()):
        row = ImageCheck(name, "-", audit_entry=head.audit_entry)
        if name not in listed:
            row.problems.append("not listed in release.json (added after the release)")
        elif name not in present:
            row.problems.append("listed in release.json but missing")
        elif present[name]:
            row.problems.append(present[name])
        else:
            _check_released(folder / name, listed[name], dt.datetime.fromisoformat(document["created"]), now,
                            row, verifier, registry)
        report.rows.append(row)
    return report


def _check_released(path: Path, item: dict, released_at: dt.datetime, now: dt.datetime, row: ImageCheck,
                    verifier: ProvenanceVerifier, registry: ConsentRegistry) -> None:
    if not path.is_file() or file_digest(path) != item["sha256"]:
        row.problems.append("changed since the release (SHA-256 differs from release.json)")
        return
    provenance = verifier.verify(path)
    row.provenance, row.consent_record_id = provenance.status, item["consent_record_id"]
    if not provenance.trusted:
        row.problems.append(f"provenance {provenance.status}: {provenance.detail}")
    elif provenance.consent_record_id != item["consent_record_id"]:
        row.problems.append(f"manifest names consent record {provenance.consent_record_id!r}, release.json "
                            f"{item['consent_record_id']!r}")
    try:
        record = registry.get(item["consent_record_id"])
    except UnknownRecord as error:
        row.problems.append(str(error.args[0]))
        return
    row.subject = record.subject
    refusal = record.decide(Purpose.AVATAR_GENERATION, released_at)
    row.consent = "allowed" if refusal is None else f"refused: {refusal.value}"
    if refusal is not None:
        row.problems.append(f"consent for avatar-generation was {refusal.value} at release time")
    until = item.get("permission_until")
    if until is not None and dt.datetime.fromisoformat(until) <= now:
        row.problems.append(f"the consent record's release permission expired at {until}")
