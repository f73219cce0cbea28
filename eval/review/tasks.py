"""The three review tasks - blind rating, pairwise A/B, approval - independent of HTTP.

Pages and the JSON API both call `ReviewService`; a refusal is a `ReviewError` carrying the HTTP
status and the field at fault, raised before anything is written.
"""
from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from eval.review.approval import ApprovalView, approval_view, consent_check
from eval.review.auth import Auth
from eval.review.catalog import Catalog, Pair, ReviewItem
from eval.review.recorder import Recorder
from eval.review.store import FLAGS, AlreadyRecorded, Account, Decision, Rating, ReviewStore, Vote

TEXT_MAX = 2000
TOKEN_MAX = 2048
CAN = {"rate": {"reviewer", "approver", "admin"}, "decide": {"approver"}, "accounts": {"admin"}}


class ReviewError(Exception):
    def __init__(self, status: int, message: str, field: str | None = None):
        super().__init__(message)
        self.status, self.message, self.field = status, message, field

    def detail(self) -> list[dict]:
        return [{"loc": ["body", self.field] if self.field else ["body"], "msg": self.message}]


def require(account: Account, permission: str) -> None:
    if account.role not in CAN[permission]:
        raise ReviewError(403, f"role {account.role!r} may not {permission}")


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_max_length=TEXT_MAX)
    token: str = Field(max_length=TOKEN_MAX)


Score = Field(default=None, ge=1, le=5)


class RatingSubmission(_Body):
    line: int
    skipped: bool = False
    likeness: int | None = Score
    prompt_fidelity: int | None = Score
    quality: int | None = Score
    flags: list[Literal["copy", "not_same", "artefacts", "unsafe", "other"]] = Field(default_factory=list,
                                                                                       max_length=len(FLAGS))
    other_text: str | None = None

    @model_validator(mode="after")
    def _scores_unless_skipped(self):
        if not self.skipped:
            missing = [name for name in ("likeness", "prompt_fidelity", "quality") if getattr(self, name) is None]
            if missing:
                raise ValueError(f"{', '.join(missing)}: a score 1-5 is required unless the item is skipped")
        return self


class VoteSubmission(_Body):
    outcome: Literal["left", "right", "tie", "both_bad"]


class DecisionSubmission(_Body):
    line: int
    decision: Literal["approve", "reject"]
    reason: str | None = None

    @model_validator(mode="after")
    def _reason_on_reject(self):
        if self.decision == "reject" and not (self.reason or "").strip():
            raise ValueError("reason: a rejection needs a reason")
        return self


def parse(model: type[BaseModel], data: dict | BaseModel) -> BaseModel:
    """Validate a body (a form's fields; the API's arrive validated); a bad one is a ReviewError(422)
    naming the first field at fault."""
    if isinstance(data, model):
        return data
    try:
        return model.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or None
        message = first["msg"].removeprefix("Value error, ")
        if field is None and ":" in message:  # model-level checks name the field first
            field = message.split(":")[0].split(",")[0]
        raise ReviewError(422, message, field) from None


@dataclass(frozen=True)
class RatingTask:
    item: ReviewItem
    position: int
    token: str
    rated: int  # by this reviewer so far
    remaining: int


@dataclass(frozen=True)
class PairTask:
    pair: Pair
    left: ReviewItem
    right: ReviewItem
    token: str
    remaining: int


def _order(reviewer: str, run_id: str, keys) -> list:
    """A fixed shuffle per reviewer (so each reviewer sees a different order, the same on every visit)."""
    return sorted(keys, key=lambda key: hashlib.sha256(f"{run_id}\0{reviewer}\0{key}".encode()).digest())


class ReviewService:
    def __init__(self, catalog: Catalog, store: ReviewStore, recorder: Recorder, auth: Auth, context,
                 ratings_per_image: int = 3):
        self.catalog, self.store, self.recorder, self.auth, self.context = catalog, store, recorder, auth, context
        self.k = ratings_per_image

    @property
    def run_id(self) -> str:
        return self.catalog.run_id

    def _shown(self, token: str, account: Account, task: str) -> tuple[dict, float]:
        try:
            shown, spent = self.auth.presented(token, account.name)
        except ValueError as error:
            raise ReviewError(422, str(error), "token") from None
        if shown.get("task") != task or shown.get("run") != self.run_id:
            raise ReviewError(422, f"this token was not issued for a {task} in this run", "token")
        return shown, spent

    def _item(self, line: int) -> ReviewItem:
        item = self.catalog.item(line)
        if item is None:
            raise ReviewError(422, f"no image at manifest line {line} in this run", "line")
        return item

    # -- blind rating ------------------------------------------------------------------------------

    def next_rating(self, account: Account) -> RatingTask | None:
        require(account, "rate")
        done = self.store.rated_lines(self.run_id, account.name)
        counts = self.store.rating_counts(self.run_id)
        order = _order(account.name, self.run_id, self.catalog.items)
        open_lines = [(position, line) for position, line in enumerate(order)
                      if line not in done and counts.get(line, 0) < self.k]
        if not open_lines:
            return None
        position, line = open_lines[0]
        token = self.auth.presentation(task="rating", run=self.run_id, reviewer=account.name, line=line,
                                       position=position)
        return RatingTask(self.catalog.items[line], position, token, len(done), len(open_lines))

    def submit_rating(self, account: Account, body: dict | RatingSubmission) -> Rating:
        require(account, "rate")
        submission = parse(RatingSubmission, body)
        shown, spent = self._shown(submission.token, account, "rating")
        item = self._item(submission.line)
        if shown["line"] != item.line:
            raise ReviewError(422, f"the token was issued for line {shown['line']}, not {item.line}", "line")
        scored = not submission.skipped
        row = Rating(run_id=self.run_id, line=item.line, image_sha256=item.sha256, system=item.system,
                     subject=item.subject, prompt=item.prompt, prompt_category=item.prompt_category, seed=item.seed,
                     reviewer=account.name, skipped=submission.skipped,
                     likeness=submission.likeness if scored else None,
                     prompt_fidelity=submission.prompt_fidelity if scored else None,
                     quality=submission.quality if scored else None,
                     other_text=(submission.other_text or None) if "other" in submission.flags else None,
                     time_spent_s=spent, presented_position=int(shown["position"]),
                     **{f"flag_{flag}": scored and flag in submission.flags for flag in FLAGS})
        return self._record(row, account)

    def _record(self, row, account: Account):
        try:
            return self.recorder.record(row, account.role)
        except AlreadyRecorded as error:
            raise ReviewError(409, str(error)) from None

    # -- pairwise A/B ------------------------------------------------------------------------------

    def next_pair(self, account: Account) -> PairTask | None:
        require(account, "rate")
        done = self.store.voted_pairs(self.run_id, account.name)
        counts = self.store.vote_counts(self.run_id)
        open_pairs = [pair_id for pair_id in _order(account.name, self.run_id, self.catalog.pairs)
                      if pair_id not in done and counts.get(pair_id, 0) < self.k]
        if not open_pairs:
            return None
        pair = self.catalog.pairs[open_pairs[0]]
        left, right = (pair.first, pair.second) if secrets.randbelow(2) else (pair.second, pair.first)
        token = self.auth.presentation(task="vote", run=self.run_id, reviewer=account.name, pair=pair.pair_id,
                                       left=left.line, right=right.line)
        return PairTask(pair, left, right, token, len(open_pairs))

    def submit_vote(self, account: Account, body: dict | VoteSubmission) -> Vote:
        require(account, "rate")
        submission = parse(VoteSubmission, body)
        shown, spent = self._shown(submission.token, account, "vote")
        left, right = self._item(shown["left"]), self._item(shown["right"])
        winner = {"left": left.system, "right": right.system}.get(submission.outcome)
        row = Vote(run_id=self.run_id, pair_id=shown["pair"], subject=left.subject, prompt=left.prompt,
                   seed=left.seed, system_left=left.system, system_right=right.system, line_left=left.line,
                   line_right=right.line, image_left=left.sha256, image_right=right.sha256, reviewer=account.name,
                   outcome=submission.outcome, winner=winner, time_spent_s=spent)
        return self._record(row, account)

    # -- approval ----------------------------------------------------------------------------------

    def approval(self, account: Account, line: int) -> tuple[ApprovalView, str]:
        """The approver's view of one image and the token its decision form carries."""
        require(account, "decide")
        item = self.catalog.item(line)
        if item is None:
            raise ReviewError(404, f"no image at manifest line {line} in this run", "line")
        view = approval_view(self.catalog, self.context, self.store, item, account.name)
        return view, self.auth.presentation(task="decision", run=self.run_id, reviewer=account.name, line=line)

    def statuses(self, account: Account) -> dict[int, str]:
        """{line: undecided | approved | rejected | revoked} for the approval list."""
        require(account, "decide")
        latest = {d.line: d for d in self.store.decisions_for(self.run_id)}
        consent = {}
        statuses = {}
        for line, item in self.catalog.items.items():
            decision = latest.get(line)
            if decision is None:
                statuses[line] = "undecided"
            elif decision.decision == "reject":
                statuses[line] = "rejected"
            else:
                if item.subject not in consent:
                    consent[item.subject] = consent_check(self.context, item.subject).ok
                statuses[line] = "approved" if consent[item.subject] else "revoked"
        return statuses

    def decide(self, account: Account, body: dict | DecisionSubmission) -> Decision:
        require(account, "decide")
        submission = parse(DecisionSubmission, body)
        shown, spent = self._shown(submission.token, account, "decision")
        item = self._item(submission.line)
        if shown["line"] != item.line:
            raise ReviewError(422, f"the token was issued for line {shown['line']}, not {item.line}", "line")
        view = approval_view(self.catalog, self.context, self.store, item, account.name)
        if view.self_generated:
            raise ReviewError(403, view.self_generated)
        if submission.decision == "approve" and view.blockers:
            raise ReviewError(409, "cannot be approved: " + "; ".join(view.blockers))
        row = Decision(run_id=self.run_id, line=item.line, image_sha256=item.sha256, system=item.system,
                       subject=item.subject, approver=account.name, decision=submission.decision,
                       reason=(submission.reason or "").strip() or None, time_spent_s=spent)
        return self._record(row, account)
