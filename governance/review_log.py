"""Human review actions in the audit log: the one channel from the review app to governance.

The review app (``eval/review``) writes every rating, vote and release decision here; release reads
the decisions back. Governance never imports the app: this module is the whole contract.

An entry: ``action`` is one of ``REVIEW_ACTIONS``; ``actor`` the account name; ``role`` the account's
review role (reviewer, approver, admin); ``subject`` the image's subject; ``object`` the image file's
``sha256:<hex>``; ``details`` the values (for a decision: ``decision``, ``reason``, ``run``, ``line``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Iterable

import rfc8785

from governance.audit_log import AuditLog, line_hash

RATING = "review.rating"
VOTE = "review.vote"
DECISION = "review.decision"
REVIEW_ACTIONS = (RATING, VOTE, DECISION)
APPROVE = "approve"
REJECT = "reject"


@dataclass(frozen=True)
class ReviewDecision:
    """One approve/reject decision as the audit log holds it."""

    seq: int
    entry_hash: str          # sha256 of the entry's canonical line: what a release cites
    time: dt.datetime
    actor: str
    role: str | None
    image_sha256: str        # "sha256:<hex>" of the image file decided on
    subject: str | None
    decision: str            # APPROVE or REJECT
    reason: str | None
    run: str | None
    line: int | None

    @property
    def approved(self) -> bool:
        return self.decision == APPROVE


def log_review_action(log: AuditLog, *, action: str, actor: str, role: str, image_sha256: str,
                      subject: str | None, details: dict[str, Any]) -> dict[str, Any]:
    """Append one review action and return the entry (with ``seq``)."""
    if action not in REVIEW_ACTIONS:
        raise ValueError(f"review action must be one of {REVIEW_ACTIONS}, got {action!r}")
    if action == DECISION and details.get("decision") not in (APPROVE, REJECT):
        raise ValueError(f"a decision must be {APPROVE!r} or {REJECT!r}, got {details.get('decision')!r}")
    if action == DECISION and details["decision"] == REJECT and not details.get("reason"):
        raise ValueError("a rejection needs a reason")
    return log.append(actor=actor, role=role, action=action, subject=subject, object=image_sha256,
                      details=details)


def _decision(entry: dict[str, Any]) -> ReviewDecision:
    details = entry.get("details") or {}
    return ReviewDecision(
        seq=entry["seq"], entry_hash=line_hash(rfc8785.dumps(entry)),
        time=dt.datetime.fromisoformat(entry["time"]), actor=entry["actor"], role=entry.get("role"),
        image_sha256=entry["object"], subject=entry.get("subject"), decision=details["decision"],
        reason=details.get("reason"), run=details.get("run"), line=details.get("line"))


def review_decisions(entries: Iterable[dict[str, Any]]) -> list[ReviewDecision]:
    """Every successful decision entry, in log order (verify the log first: this reads, it does not check)."""
    return [_decision(entry) for entry in entries
            if entry.get("action") == DECISION and entry.get("outcome") == "ok"]


def latest_decisions(entries: Iterable[dict[str, Any]]) -> dict[str, ReviewDecision]:
    """{image sha256: its latest decision}: a later rejection replaces an earlier approval."""
    return {decision.image_sha256: decision for decision in review_decisions(entries)}
