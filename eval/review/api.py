"""The JSON API under /api/v1: a per-user bearer token (POST /api/v1/token), then the three tasks.

Bodies are validated by their pydantic models (a bad one is 422 naming the field); images are
addressed by manifest line, never by path.
"""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from eval.review.app import state_of
from eval.review.auth import NAME_MAX, LoginRefused
from eval.review.catalog import ReviewItem
from eval.review.store import Account
from eval.review.tasks import (TOKEN_MAX, DecisionSubmission, RatingSubmission, ReviewError, VoteSubmission,
                               require)

router = APIRouter()
API = "/api/v1"


class Credentials(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=NAME_MAX)
    password: str = Field(max_length=TOKEN_MAX)


def client_of(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def api_account(request: Request) -> Account:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    account = state_of(request).auth.account_for_token(token) if scheme.lower() == "bearer" and token else None
    if account is None:
        raise ApiUnauthorized()
    return account


class ApiUnauthorized(ReviewError):
    def __init__(self):
        super().__init__(401, "a valid API token is required (Authorization: Bearer TOKEN; POST /api/v1/token)")


Caller = Annotated[Account, Depends(api_account)]


def image_urls(item: ReviewItem) -> dict:
    return {"image_url": f"/images/{item.line}",
            "reference_urls": [f"/images/{item.line}/reference/{i}" for i in range(len(item.references))]}


@router.post(f"{API}/token")
def issue_token(credentials: Credentials, request: Request) -> dict:
    auth = state_of(request).auth
    try:
        account = auth.login(credentials.name, credentials.password, client_of(request))
    except LoginRefused as refused:
        raise ReviewError(refused.status, refused.reason) from None
    return {"token": auth.issue_api_token(account), "name": account.name, "role": account.role}


@router.get(f"{API}/me")
def me(account: Caller) -> dict:
    return {"name": account.name, "role": account.role}


@router.get(f"{API}/ratings/next")
def next_rating(account: Caller, request: Request) -> dict:
    task = state_of(request).service.next_rating(account)
    if task is None:
        return {"item": None, "done": True}
    item = task.item
    return {"done": False, "token": task.token, "position": task.position, "remaining": task.remaining,
            "item": {"line": item.line, "prompt": item.prompt, **image_urls(item)}}


@router.post(f"{API}/ratings", status_code=201)
def submit_rating(submission: RatingSubmission, account: Caller, request: Request) -> dict:
    row = state_of(request).service.submit_rating(account, submission)
    return {"rating_id": row.rating_id, "audit_seq": row.audit_seq}


@router.get(f"{API}/pairs/next")
def next_pair(account: Caller, request: Request) -> dict:
    task = state_of(request).service.next_pair(account)
    if task is None:
        return {"pair": None, "done": True}
    left, right = task.left, task.right
    return {"done": False, "token": task.token, "remaining": task.remaining,
            "pair": {"prompt": left.prompt, "left": image_urls(left), "right": image_urls(right)}}


@router.post(f"{API}/votes", status_code=201)
def submit_vote(submission: VoteSubmission, account: Caller, request: Request) -> dict:
    row = state_of(request).service.submit_vote(account, submission)
    return {"vote_id": row.vote_id, "audit_seq": row.audit_seq, "left_system": row.system_left,
            "right_system": row.system_right, "winner": row.winner}


@router.get(f"{API}/items")
def items(account: Caller, request: Request) -> dict:
    service = state_of(request).service
    statuses = service.statuses(account)
    return {"run": service.run_id, "items": [
        {"line": item.line, "system": item.system, "subject": item.subject, "prompt": item.prompt,
         "image_sha256": item.sha256, "status": statuses[item.line]} for item in service.catalog.items.values()]}


@router.get(f"{API}/items/{{line}}")
def item(line: int, account: Caller, request: Request) -> dict:
    view, token = state_of(request).service.approval(account, line)
    it = view.item
    return {
        "token": token, "line": it.line, "system": it.system, "subject": it.subject, "prompt": it.prompt,
        "image_sha256": it.sha256, **image_urls(it), "scores": it.scores,
        "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in view.checks],
        "gates": [{"gate": g.gate, "verdict": g.verdict, "message": g.message} for g in view.gates],
        "ratings": {"n": len([r for r in view.ratings if not r.skipped]), "skipped": sum(r.skipped for r in view.ratings),
                    **{score: view.mean(score) for score in ("likeness", "prompt_fidelity", "quality")}},
        "decisions": [{"decision": d.decision, "approver": d.approver, "reason": d.reason, "status": status,
                       "created": d.created.isoformat() + "Z"} for d, status in view.decisions],
        "status": view.status, "can_approve": view.can_approve, "blockers": view.blockers}


@router.post(f"{API}/decisions", status_code=201)
def decide(submission: DecisionSubmission, account: Caller, request: Request) -> dict:
    row = state_of(request).service.decide(account, submission)
    return {"decision_id": row.decision_id, "audit_seq": row.audit_seq, "decision": row.decision}


@router.get(f"{API}/accounts")
def accounts(account: Caller, request: Request) -> list[dict]:
    require(account, "accounts")
    return [{"name": a.name, "role": a.role, "active": a.active} for a in state_of(request).service.store.accounts()]


def image_file(request: Request, line: int, reference: int | None) -> FileResponse:
    """An image of the run by manifest line (and reference index): the only way files are served."""
    item = state_of(request).service.catalog.item(line)
    if item is None:
        return JSONResponse({"detail": [{"loc": ["path", "line"], "msg": f"no image at line {line}"}]},
                            status_code=404)
    if reference is not None and not 0 <= reference < len(item.references):
        return JSONResponse({"detail": [{"loc": ["path", "index"], "msg": f"no reference {reference}"}]},
                            status_code=404)
    path = item.image if reference is None else item.references[reference]
    if not path.is_file():
        return JSONResponse({"detail": [{"loc": ["path", "line"], "msg": "the image file is missing"}]},
                            status_code=404)
    return FileResponse(path)
