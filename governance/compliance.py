"""Compliance audit of a folder of generated images.

Each image must (1) carry a trusted, intact C2PA manifest, (2) reference a consent record that
exists and allowed avatar-generation at the signing time stated in the manifest, and (3) have a
matching ``provenance.sign`` entry (same file digest) in the audit log, which must itself verify.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from governance.consent import Purpose
from governance.provenance import MIME_TYPES, file_digest
from governance.registry import UnknownRecord

if TYPE_CHECKING:
    from governance.context import GovernanceContext


@dataclass
class ImageCheck:
    image: str
    provenance: str
    consent_record_id: str | None = None
    subject: str | None = None
    consent: str = "-"
    audit_entry: int | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class ComplianceReport:
    folder: str
    audit_log: str
    audit_log_ok: bool
    rows: list[ImageCheck]

    @property
    def ok(self) -> bool:
        return self.audit_log_ok and bool(self.rows) and all(row.ok for row in self.rows)

    def to_dict(self) -> dict:
        return {"folder": self.folder, "ok": self.ok, "audit_log": self.audit_log, "audit_log_ok": self.audit_log_ok,
                "images": len(self.rows), "failed": sum(not row.ok for row in self.rows),
                "rows": [{**asdict(row), "ok": row.ok} for row in self.rows]}

    def table(self) -> str:
        header = ("image", "provenance", "consent record", "consent at signing", "audit entry", "result")
        lines = [(row.image, row.provenance, row.consent_record_id or "-", row.consent,
                  str(row.audit_entry or "-"), "ok" if row.ok else "FAIL: " + "; ".join(row.problems))
                 for row in self.rows]
        widths = [max(len(str(cell)) for cell in column) for column in zip(header, *lines)]
        render = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
        verdict = "PASS" if self.ok else "FAIL"
        if not self.rows:
            verdict += " (no images found)"
        return "\n".join([render(header), render(["-" * w for w in widths]), *map(render, lines), "",
                          f"audit log: {self.audit_log}", f"{verdict}: {len(self.rows)} images, "
                          f"{sum(not row.ok for row in self.rows)} failed"])


def audit_dir(folder: str | Path, gov: "GovernanceContext") -> ComplianceReport:
    folder = Path(folder)
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder}: not a folder")
    from governance.release_check import RELEASE_MANIFEST, audit_release_dir  # imports this module

    if (folder / RELEASE_MANIFEST).exists():
        return audit_release_dir(folder, gov)
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in MIME_TYPES and p.is_file())
    verification = gov.verify_audit_log()
    signed_entries = {entry["object"]: entry["seq"] for entry in gov.audit_log.entries()
                      if entry.get("action") == "provenance.sign" and entry.get("outcome") == "ok"}
    rows = [_check_image(path, gov, signed_entries) for path in tqdm(images, desc="audit-dir", unit="image",
                                                                     disable=len(images) < 20)]
    return ComplianceReport(str(folder), str(verification), verification.ok, rows)


def _check_image(path: Path, gov: "GovernanceContext", signed_entries: dict[str, int]) -> ImageCheck:
    provenance = gov.verifier.verify(path)
    row = ImageCheck(path.name, provenance.status)
    if not provenance.trusted:
        row.problems.append(f"provenance {provenance.status}: {provenance.detail}")
        return row
    row.consent_record_id = provenance.consent_record_id
    row.audit_entry = signed_entries.get(file_digest(path))
    if row.audit_entry is None:
        row.problems.append("no provenance.sign entry for this file in the audit log")
    if not provenance.ai_generated:
        row.problems.append("manifest does not declare c2pa.created / trainedAlgorithmicMedia")
    if not provenance.consent_record_id or not provenance.signed_at:
        row.problems.append("manifest has no consent record reference")
        return row
    try:
        record = gov.registry.get(provenance.consent_record_id)
        signed_at = dt.datetime.fromisoformat(provenance.signed_at)
        if signed_at.tzinfo is None:
            raise ValueError("naive time")
    except UnknownRecord as error:
        row.problems.append(str(error.args[0]))
        return row
    except ValueError:
        row.problems.append(f"signing time {provenance.signed_at!r} is not an ISO time")
        return row
    row.subject = record.subject
    refusal = record.decide(Purpose.AVATAR_GENERATION, signed_at)
    row.consent = "allowed" if refusal is None else f"refused: {refusal.value}"
    if refusal is not None:
        row.problems.append(f"consent for avatar-generation was {refusal.value} at signing time")
    return row
