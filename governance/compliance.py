"""Compliance audit of a folder of generated images.

Every entry under the folder, at any depth and hidden ones too, is a row. Symbolic links are never
followed (a row says where one points), and a file that is not a supported image fails as "not
checked". Each image must (1) carry a trusted, intact C2PA manifest, (2) reference a consent record that
exists and allowed avatar-generation at the signing time stated in the manifest, and (3) have a
matching ``provenance.sign`` entry (same file digest) in the audit log, which must itself verify.
"""

from __future__ import annotations

import datetime as dt
import os
import stat
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

from tqdm import tqdm

from governance.audit_log import AuditLog, AuditVerification
from governance.consent import Purpose
from governance.provenance import MIME_TYPES, ProvenanceVerifier, file_digest
from governance.registry import ConsentRegistry, UnknownRecord


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
        header = ("file", "provenance", "consent record", "consent at signing", "audit entry", "result")
        lines = [(row.image, row.provenance, row.consent_record_id or "-", row.consent,
                  str(row.audit_entry or "-"), "ok" if row.ok else "FAIL: " + "; ".join(row.problems))
                 for row in self.rows]
        widths = [max(len(str(cell)) for cell in column) for column in zip(header, *lines)]
        render = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
        verdict = "PASS" if self.ok else "FAIL"
        if not self.rows:
            verdict += " (no files found)"
        return "\n".join([render(header), render(["-" * w for w in widths]), *map(render, lines), "",
                          f"audit log: {self.audit_log}", f"{verdict}: {len(self.rows)} files, "
                          f"{sum(not row.ok for row in self.rows)} failed"])


def folder_files(folder: Path) -> Iterator[tuple[Path, str | None]]:
    """(path, why it is not checked, or None for a supported image) for everything under ``folder``."""
    unreadable: list[OSError] = []
    for root, directories, files in os.walk(folder, followlinks=False, onerror=unreadable.append):
        directories.sort()
        for name in directories:
            path = Path(root) / name
            if path.is_symlink():
                yield path, f"not checked: symbolic link to {os.readlink(path)} (not followed)"
        for name in sorted(files):
            path = Path(root) / name
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                yield path, f"not checked: symbolic link to {os.readlink(path)} (not followed)"
            elif not stat.S_ISREG(mode):
                yield path, "not checked: not a regular file"
            elif path.suffix.lower() not in MIME_TYPES:
                yield path, f"not checked: not a supported image type (expected {', '.join(sorted(MIME_TYPES))})"
            else:
                yield path, None
    for error in unreadable:
        yield Path(error.filename), f"not checked: folder unreadable ({error.strerror})"


def audit_dir(folder: str | Path, *, verifier: ProvenanceVerifier, audit_log: AuditLog, registry: ConsentRegistry,
              verification: AuditVerification | None = None) -> ComplianceReport:
    """Check everything under ``folder``; ``verification``: the log's, when the caller verified it already."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder}: not a folder")
    from governance.release_check import RELEASE_MANIFEST, audit_release_dir  # it imports this module

    if (folder / RELEASE_MANIFEST).exists():
        return audit_release_dir(folder, verifier=verifier, audit_log=audit_log, registry=registry,
                                 verification=verification)
    entries = sorted(folder_files(folder))
    verification = verification or audit_log.verify()
    signed_entries = {entry.get("object"): entry.get("seq") for entry in audit_log.entries()
                      if entry.get("action") == "provenance.sign" and entry.get("outcome") == "ok"}
    rows = []
    for path, not_checked in tqdm(entries, desc="audit-dir", unit="file", disable=len(entries) < 20):
        name = path.relative_to(folder).as_posix()
        if not_checked:
            rows.append(ImageCheck(name, "not checked", problems=[not_checked]))
        else:
            rows.append(_check_image(path, name, verifier, registry, signed_entries))
    return ComplianceReport(str(folder), str(verification), verification.ok, rows)


def _check_image(path: Path, name: str, verifier: ProvenanceVerifier, registry: ConsentRegistry,
                 signed_entries: dict[str, int]) -> ImageCheck:
    provenance = verifier.verify(path)
    row = ImageCheck(name, provenance.status)
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
        record = registry.get(provenance.consent_record_id)
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
