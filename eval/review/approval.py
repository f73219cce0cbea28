"""What an approver sees for one image, and why approval may be refused.

Consent and provenance are asked of the governance layer at the moment of the request (consent may
have been withdrawn since start-up); the gate verdicts are the report's (`eval.report.gates`).
Approval adds to the automatic gates and never overrides them: an image whose provenance is not
trusted, whose subject's avatar-generation consent is not valid now, or that the copy-paste rule
flags cannot be approved, and nobody approves a run they generated themselves. Rejection is always
possible. An earlier approval whose subject's consent is no longer valid reads as "revoked".
"""
from __future__ import annotations

from dataclasses import dataclass, field

from eval.report.gates import GateResult
from eval.review.catalog import Catalog, ReviewItem
from eval.review.store import Decision, Rating

GENERATION = "avatar-generation"


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class ApprovalView:
    item: ReviewItem
    checks: list[Check]
    gates: list[GateResult]
    ratings: list[Rating]
    decisions: list[tuple[Decision, str]]  # each decision and its status now: approved | rejected | revoked
    self_generated: str | None = None  # why this approver may not approve this run
    blockers: list[str] = field(default_factory=list)

    @property
    def can_approve(self) -> bool:
        return not self.blockers

    @property
    def status(self) -> str:
        return self.decisions[-1][1] if self.decisions else "undecided"

    def mean(self, score: str) -> float | None:
        values = [getattr(r, score) for r in self.ratings if not r.skipped and getattr(r, score) is not None]
        return sum(values) / len(values) if values else None


def consent_check(context, subject: str) -> Check:
    if context is None:
        return Check("consent", False, "governance is not configured: consent cannot be checked")
    decision = context.consent_status(subject).get(GENERATION)
    if decision is None:
        return Check("consent", False, f"{GENERATION} is a purpose unknown to the consent registry")
    verdict = "valid now" if decision.allowed else f"REFUSED: {decision.reason}"
    return Check("consent", bool(decision.allowed), f"{GENERATION} consent of {subject}: {verdict}")


def _provenance_check(context, item: ReviewItem) -> Check:
    if context is None:
        return Check("provenance", False, "governance is not configured: C2PA provenance cannot be checked")
    result = context.verify_provenance([item.image])[0]
    detail = f"C2PA {result.status}" + (f": {result.detail}" if result.detail else "")
    return Check("provenance", result.status == "trusted", detail)


def _copy_paste_check(item: ReviewItem) -> Check:
    if item.copy_paste is None:
        return Check("copy-paste", True, "copy-paste rule: not judged (no face scored in this image)")
    return Check("copy-paste", not item.copy_paste,
                 "copy-paste rule: FLAGGED, a near copy of the reference" if item.copy_paste
                 else "copy-paste rule: not a copy")


def approval_view(catalog: Catalog, context, store, item: ReviewItem, approver: str) -> ApprovalView:
    checks = [_provenance_check(context, item), consent_check(context, item.subject), _copy_paste_check(item)]
    consent_ok = checks[1].ok
    decisions = [(d, "rejected" if d.decision == "reject" else "approved" if consent_ok else "revoked")
                 for d in store.decisions_for(catalog.run_id, item.line)]
    self_generated = (f"separation of duties: {approver} ran the sampler that generated this run, "
                      "so another approver must decide" if approver in catalog.sampler_actors else None)
    blockers = [check.detail for check in checks if not check.ok] + ([self_generated] if self_generated else [])
    return ApprovalView(item=item, checks=checks, gates=catalog.gates.get(item.system, []),
                        ratings=store.ratings_for(catalog.run_id, item.line), decisions=decisions,
                        self_generated=self_generated, blockers=blockers)
