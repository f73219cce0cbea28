"""Server-rendered pages (jinja2, autoescaped): login, home, rate, vote, approve; and the images.

Every form carries a CSRF token; a page without a session redirects to /login. The pages work with
the keyboard alone: 1-5 set the scores, A/B/T/X vote, Enter submits.
"""
from __future__ import annotations

import secrets
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from eval.report.metrics import metric_label
from eval.review.api import api_account, client_of, image_file
from eval.review.app import NeedLogin, state_of
from eval.review.auth import LOGIN_CSRF_COOKIE, SESSION_COOKIE, SESSION_MAX_AGE_S, LoginRefused, SessionUser
from eval.review.tasks import ReviewError

TEMPLATES = Path(__file__).parent / "templates"
REPORT_CSS = Path(__file__).resolve().parents[1] / "report" / "templates" / "report.css"

router = APIRouter(include_in_schema=False)
_env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html", "j2"]))
_env.globals["report_css"] = REPORT_CSS.read_text() if REPORT_CSS.is_file() else ""
_env.globals["review_css"] = (TEMPLATES / "review.css").read_text()
_env.globals["metric_label"] = metric_label


def render(request: Request, template: str, status: int = 200, **values) -> HTMLResponse:
    user = getattr(request.state, "user", None)
    csrf = state_of(request).auth.csrf_token(user.nonce) if user else None
    html = _env.get_template(template).render(user=user, csrf=csrf, **values)
    return HTMLResponse(html, status_code=status)


def message_page(request: Request, status: int, message: str, field: str | None = None) -> HTMLResponse:
    return render(request, "message.html.j2", status=status, status_code=status, message=message, field=field)


def page_user(request: Request) -> SessionUser:
    user = state_of(request).auth.session_user(request.cookies.get(SESSION_COOKIE))
    if user is None:
        raise NeedLogin(request.url.path)
    request.state.user = user
    return user


async def posted_form(request: Request) -> tuple[SessionUser, dict]:
    """The session's user and the form's fields, once its CSRF token checks (else 403, nothing read further)."""
    user = page_user(request)
    form = await request.form()
    if not state_of(request).auth.csrf_ok(user.nonce, form.get("csrf")):
        raise ReviewError(403, "missing or wrong CSRF token: reload the page and try again")
    fields = {key: value for key, value in form.multi_items() if key != "csrf" and value != ""}
    fields["_flags"] = form.getlist("flags")
    return user, fields


def _local(path: str | None) -> str:
    """Only a path on this server is a redirect target after login."""
    parts = urlsplit(path or "/")
    return parts.path if path and path.startswith("/") and not parts.netloc and not path.startswith("//") else "/"


# -- login ------------------------------------------------------------------------------------------

@router.get("/login")
def login_page(request: Request, next: str = "/") -> Response:
    token = secrets.token_hex(16)
    response = render(request, "login.html.j2", login_csrf=token, next=_local(next))
    response.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict",
                        secure=state_of(request).secure_cookies, max_age=3600)
    return response


@router.post("/login")
async def login(request: Request) -> Response:
    form = await request.form()
    expected = request.cookies.get(LOGIN_CSRF_COOKIE)
    if not expected or not secrets.compare_digest(expected, str(form.get("csrf", ""))):
        raise ReviewError(403, "missing or wrong CSRF token: reload the login page")
    auth = state_of(request).auth
    name, password = str(form.get("name", ""))[:256], str(form.get("password", ""))[:1024]
    try:
        account = auth.login(name, password, client_of(request))
    except LoginRefused as refused:
        return render(request, "login.html.j2", status=refused.status, login_csrf=expected, error=refused.reason,
                      next=_local(str(form.get("next", "/"))), name=name)
    response = RedirectResponse(_local(str(form.get("next", "/"))), status_code=303)
    response.set_cookie(SESSION_COOKIE, auth.session_cookie(account), httponly=True, samesite="strict",
                        secure=state_of(request).secure_cookies, max_age=SESSION_MAX_AGE_S)
    response.delete_cookie(LOGIN_CSRF_COOKIE)
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    await posted_form(request)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response


# -- home -------------------------------------------------------------------------------------------

@router.get("/")
def home(request: Request) -> Response:
    user = page_user(request)
    service = state_of(request).service
    can_rate = user.role in ("reviewer", "approver", "admin")
    rating = service.next_rating(user.account) if can_rate else None
    pair = service.next_pair(user.account) if can_rate else None
    return render(request, "home.html.j2", run=service.run_id, n_items=len(service.catalog.items),
                  n_pairs=len(service.catalog.pairs), rating=rating, pair=pair, k=service.k)


# -- blind rating -----------------------------------------------------------------------------------

@router.get("/rate")
def rate_page(request: Request) -> Response:
    user = page_user(request)
    task = state_of(request).service.next_rating(user.account)
    return render(request, "rate.html.j2", task=task)


@router.post("/rate")
async def rate(request: Request) -> Response:
    user, fields = await posted_form(request)
    flags = fields.pop("_flags")
    body = {key: fields.get(key) for key in ("token", "line", "likeness", "prompt_fidelity", "quality", "other_text")
            if fields.get(key) is not None}
    body.update(flags=flags, skipped=fields.get("action") == "skip")
    state_of(request).service.submit_rating(user.account, body)
    return RedirectResponse("/rate", status_code=303)


# -- pairwise A/B -----------------------------------------------------------------------------------

@router.get("/vote")
def vote_page(request: Request, after: str | None = None) -> Response:
    user = page_user(request)
    service = state_of(request).service
    previous = service.store.vote(after) if after else None
    if previous is not None and previous.reviewer != user.name:
        previous = None
    return render(request, "vote.html.j2", task=service.next_pair(user.account), previous=previous)


@router.post("/vote")
async def vote(request: Request) -> Response:
    user, fields = await posted_form(request)
    row = state_of(request).service.submit_vote(user.account, {key: fields.get(key) for key in ("token", "outcome")})
    return RedirectResponse(f"/vote?after={row.vote_id}", status_code=303)


# -- approval ---------------------------------------------------------------------------------------

@router.get("/approve")
def approve_list(request: Request) -> Response:
    user = page_user(request)
    service = state_of(request).service
    statuses = service.statuses(user.account)
    refused = service.catalog.sampler_actors and user.name in service.catalog.sampler_actors
    return render(request, "approve_list.html.j2", items=service.catalog.items.values(), statuses=statuses,
                  self_generated=refused, run=service.run_id)


@router.get("/approve/{line}")
def approve_page(line: int, request: Request) -> Response:
    user = page_user(request)
    view, token = state_of(request).service.approval(user.account, line)
    return render(request, "approve.html.j2", view=view, token=token)


@router.post("/approve/{line}")
async def approve(line: int, request: Request) -> Response:
    user, fields = await posted_form(request)
    body = {key: fields.get(key) for key in ("token", "decision", "reason") if fields.get(key) is not None}
    state_of(request).service.decide(user.account, body | {"line": line})
    return RedirectResponse(f"/approve/{line}", status_code=303)


@router.get("/favicon.ico")
def favicon() -> Response:
    return Response(status_code=204)


# -- images -----------------------------------------------------------------------------------------

def _viewer(request: Request) -> None:
    """Images need a session or an API token (401 otherwise: an <img> cannot follow a login redirect)."""
    if state_of(request).auth.session_user(request.cookies.get(SESSION_COOKIE)) is None:
        api_account(request)


@router.get("/images/{line}")
def image(line: int, request: Request) -> Response:
    _viewer(request)
    return image_file(request, line, None)


@router.get("/images/{line}/reference/{index}")
def reference(line: int, index: int, request: Request) -> Response:
    _viewer(request)
    return image_file(request, line, index)
