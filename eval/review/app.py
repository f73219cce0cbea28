"""The ASGI app: server-rendered pages (`pages.py`) and the JSON API under /api/v1 (`api.py`).

`create_app` is the start-up: it reconciles judgments left without their audit entry, then serves.
"""
from __future__ import annotations

import json
import sys
from contextlib import asynccontextmanager
from urllib.parse import quote
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse, RedirectResponse, Response
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

from eval.review.auth import Auth, LoginLimiter
from eval.review.catalog import Catalog
from eval.review.recorder import Recorder
from eval.review.store import ReviewStore
from eval.review.tasks import ReviewError, ReviewService
from governance.database import StoreUnavailable, first_line

BODY_LIMIT = 64 * 1024
SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; "
                                "script-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; "
                                "base-uri 'none'"),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class NeedLogin(Exception):
    def __init__(self, path: str):
        self.path = path


class BodyLimit:
    """Answers 422 to a body over `limit` bytes, declared or streamed, before the app reads it."""

    def __init__(self, app, limit: int = BODY_LIMIT):
        self.app, self.limit = app, limit

    async def _refuse(self, send) -> None:
        body = json.dumps({"detail": [{"loc": ["body"], "msg": f"request body over {self.limit} bytes"}]}).encode()
        await send({"type": "http.response.start", "status": 422,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return await self._refuse(send)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                return await self._refuse(send)
            more = message.get("more_body", False)
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)


@dataclass
class ReviewApp:
    service: ReviewService
    auth: Auth
    secure_cookies: bool = False


def create_app(catalog: Catalog, store: ReviewStore, context, *, ratings_per_image: int = 3,
               limiter: LoginLimiter | None = None, secure_cookies: bool = False) -> FastAPI:
    """The app for one run; `context` is the governance workspace whose audit log gets every action."""
    from eval.review import api, pages

    recorder = Recorder(store, context.audit_log)
    for line in recorder.reconcile({a.name: a.role for a in store.accounts()}):
        print(f"eval.review: reconciled {line}", file=sys.stderr)
    auth = Auth(store, limiter)
    state = ReviewApp(ReviewService(catalog, store, recorder, auth, context, ratings_per_image), auth, secure_cookies)

    @asynccontextmanager
    async def lifespan(_app):
        yield
        recorder.seal()

    app = FastAPI(title="idavatar review", version="1", docs_url=None, redoc_url=None, lifespan=lifespan,
                  description="Blind ratings, pairwise A/B votes and release approval of one run.")
    app.state.review = state

    @app.exception_handler(ReviewError)
    async def review_error(request: Request, error: ReviewError) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": error.detail()}, status_code=error.status)
        return pages.message_page(request, error.status, error.message, field=error.field)

    @app.exception_handler(StoreUnavailable)
    @app.exception_handler(DBAPIError)
    async def store_down(request: Request, error: Exception) -> Response:
        message = f"the review store cannot be reached right now ({first_line(error)}); nothing was recorded, try again"
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": [{"loc": [], "msg": message}]}, status_code=503)
        return pages.message_page(request, 503, message)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        if error.status_code == 400:  # a body that is not even text: bad input like any other, 422
            return JSONResponse({"detail": [{"loc": ["body"], "msg": f"not a JSON body ({error.detail})"}]},
                                status_code=422)
        return await http_exception_handler(request, error)

    @app.exception_handler(NeedLogin)
    async def need_login(request: Request, error: NeedLogin) -> Response:
        return RedirectResponse(f"/login?next={quote(error.path, safe='/')}", status_code=303)

    @app.middleware("http")
    async def security_headers(request: Request, call_next) -> Response:
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    app.include_router(api.router)
    app.include_router(pages.router)
    app.add_middleware(BodyLimit)
    return app


def state_of(request: Request) -> ReviewApp:
    return request.app.state.review
