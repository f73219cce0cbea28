"""The governance facts a review needs, from the governance layer's own checks.

Without a governance configuration every check is "not configured" - shown as such, never as passing.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable

DEFAULT_CONFIG = Path("governance.toml")


@dataclass(frozen=True)
class ConsentView:
    allowed: bool
    reason: str
    record_id: str | None


@dataclass(frozen=True)
class ProvenanceView:
    system: str
    path: str
    status: str  # trusted | untrusted | tampered | no-manifest
    detail: str


@dataclass(frozen=True)
class AuditView:
    ok: bool
    entries: int
    first_bad: int | None
    reason: str


@dataclass
class GovernanceChecks:
    configured: bool
    reason: str = ""  # why governance is not configured
    source: str = ""  # the configuration the checks came from
    consent: dict[str, dict[str, ConsentView]] = field(default_factory=dict)  # subject -> purpose -> decision
    provenance: list[ProvenanceView] = field(default_factory=list)
    audit: AuditView | None = None

    @property
    def trusted_share(self) -> float | None:
        if not self.provenance:
            return None
        return sum(p.status == "trusted" for p in self.provenance) / len(self.provenance)

    @property
    def purposes(self) -> list[str]:
        return sorted({purpose for per in self.consent.values() for purpose in per})

    def provenance_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for p in self.provenance:
            counts[p.status] = counts.get(p.status, 0) + 1
        return counts

    def restricted_to(self, system: str, subjects: Iterable[str]) -> GovernanceChecks:
        """The checks that concern one system: its outputs and its subjects."""
        wanted = set(subjects)
        return replace(self, consent={s: d for s, d in self.consent.items() if s in wanted},
                       provenance=[p for p in self.provenance if p.system == system])


def not_configured(reason: str) -> GovernanceChecks:
    return GovernanceChecks(configured=False, reason=reason)


def _purpose_name(purpose) -> str:
    return str(getattr(purpose, "value", purpose))


def check_governance(context, subjects: Iterable[str], outputs: Iterable[tuple[str, str | Path]],
                     source: str = "") -> GovernanceChecks:
    """Ask the governance layer (a `governance.GovernanceContext`) about these subjects and
    these outputs, given as (system, image path) pairs."""
    consent = {
        subject: {
            _purpose_name(purpose): ConsentView(bool(decision.allowed), str(decision.reason or ""),
                                                decision.record_id)
            for purpose, decision in context.consent_status(subject).items()
        }
        for subject in sorted(set(subjects))
    }
    outputs = [(system, str(path)) for system, path in outputs]
    results = context.verify_provenance([path for _, path in outputs]) if outputs else []
    provenance = [
        ProvenanceView(system, str(r.path), str(r.status), str(r.detail or ""))
        for (system, _), r in zip(outputs, results, strict=True)
    ]
    audit = context.verify_audit_log()
    return GovernanceChecks(
        configured=True, source=source, consent=consent, provenance=provenance,
        audit=AuditView(bool(audit.ok), int(audit.entries), audit.first_bad, str(audit.reason or "")),
    )


def load_context(config: str | Path | None):
    """(GovernanceContext or None, the config used or why there is none).

    Order: an explicit path, then $GOVERNANCE_CONFIG, then ./governance.toml.
    """
    if config is None:
        config = os.environ.get("GOVERNANCE_CONFIG") or (DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None)
    if config is None:
        return None, "none given (--governance, $GOVERNANCE_CONFIG or ./governance.toml)"
    try:
        from governance import GovernanceContext
    except ImportError as exc:
        return None, f"the governance layer is not available ({exc})"
    return GovernanceContext.load(config), str(config)
