"""Every judgment is written twice: a row in the review store, then an entry in the governance audit log.

The row is committed first (``audit_seq`` NULL), the entry appended, then the row gets the entry's
``seq``. A crash between the two leaves a row without its entry; `reconcile` finds it at start-up:
when the log already holds the entry (the crash came after the append) the row gets its ``seq``,
otherwise the entry is appended now, marked ``reconciled``. Entries carry the row's id as
``review_id``, which is how the two are matched.
"""
from __future__ import annotations

from typing import Any

from governance.audit_log import AuditLog
from governance.review_log import DECISION, RATING, VOTE, log_review_action

from eval.review.store import FLAGS, Decision, Rating, ReviewStore, Vote

_ACTION = {Rating: RATING, Vote: VOTE, Decision: DECISION}


def _details(row: Rating | Vote | Decision) -> dict[str, Any]:
    if isinstance(row, Rating):
        return {"review_id": row.rating_id, "run": row.run_id, "line": row.line, "skipped": row.skipped,
                "likeness": row.likeness, "prompt_fidelity": row.prompt_fidelity, "quality": row.quality,
                "flags": [flag for flag in FLAGS if getattr(row, f"flag_{flag}")], "other_text": row.other_text}
    if isinstance(row, Vote):
        return {"review_id": row.vote_id, "run": row.run_id, "line_left": row.line_left, "line_right": row.line_right,
                "system_left": row.system_left, "system_right": row.system_right,
                "image_left": row.image_left, "image_right": row.image_right, "outcome": row.outcome, "winner": row.winner}
    return {"review_id": row.decision_id, "decision": row.decision, "reason": row.reason, "run": row.run_id,
            "line": row.line}


def _actor(row: Rating | Vote | Decision) -> str:
    return row.approver if isinstance(row, Decision) else row.reviewer


def _image(row: Rating | Vote | Decision) -> str:
    return row.image_left if isinstance(row, Vote) else row.image_sha256


class Recorder:
    def __init__(self, store: ReviewStore, audit_log: AuditLog):
        self.store = store
        self.audit_log = audit_log
        self.appended = 0  # audit entries written by this process (a checkpoint at shutdown seals them)

    def _append(self, row: Rating | Vote | Decision, role: str, **extra: Any) -> int:
        entry = log_review_action(self.audit_log, action=_ACTION[type(row)], actor=_actor(row), role=role,
                                  image_sha256=_image(row), subject=row.subject, details=_details(row) | extra)
        self.appended += 1
        return entry["seq"]

    def record(self, row: Rating | Vote | Decision, role: str) -> Rating | Vote | Decision:
        """Commit the row, append its audit entry, store the entry's seq; return the row."""
        self.store.add(row)
        self.store.mark_audited(row, self._append(row, role))
        return row

    def reconcile(self, roles: dict[str, str]) -> list[str]:
        """Give every row left without its audit entry one; return a line per row reconciled.

        `roles`: account name -> role, for entries appended now."""
        pending = self.store.unaudited()
        if not pending:
            return []
        logged = {entry["details"]["review_id"]: entry["seq"] for entry in self.audit_log.entries()
                  if entry.get("action") in _ACTION.values() and "review_id" in (entry.get("details") or {})}
        done = []
        for row in pending:
            review_id = _details(row)["review_id"]
            if review_id in logged:
                seq, how = logged[review_id], "its audit entry was already written"
            else:
                seq, how = self._append(row, roles.get(_actor(row), "reviewer"), reconciled=True), "audit entry appended"
            self.store.mark_audited(row, seq)
            done.append(f"{_ACTION[type(row)]} {review_id} by {_actor(row)}: {how} (seq {seq})")
        return done

    def seal(self) -> None:
        """A signed checkpoint over what this process appended, so a cut tail is caught later."""
        if self.appended:
            self.audit_log.checkpoint()
            self.appended = 0
