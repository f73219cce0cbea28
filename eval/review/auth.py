"""Accounts, sessions, CSRF, API tokens, login rate limits and signed presentation tokens.

- Passwords: argon2id (argon2-cffi). API tokens: random, stored as their SHA-256.
- Session cookie: signed and time-stamped (itsdangerous), HttpOnly, SameSite=Strict, expiring;
  it names the account and a per-session nonce, and the CSRF token is an HMAC of that nonce.
- Presentation token: what the server showed (image, pair order, position) and when, signed, so
  a submission cannot claim another order, and time spent is measured by the server.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from eval.review.store import Account, ReviewStore

SESSION_COOKIE = "review_session"
LOGIN_CSRF_COOKIE = "review_login_csrf"
SESSION_MAX_AGE_S = 8 * 3600
PRESENTATION_MAX_AGE_S = 24 * 3600
NAME_MAX = 64

_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def generate_password() -> str:
    return secrets.token_urlsafe(12)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_account_name(name: str) -> str:
    """Any printable name up to 64 characters (pages escape it); no control characters or outer spaces."""
    if not name or len(name) > NAME_MAX or name != name.strip() or not name.isprintable():
        raise ValueError(f"account name must be 1-{NAME_MAX} printable characters without outer spaces: {name!r}")
    return name


class LoginLimiter:
    """At most `limit` failed logins per key (account or client) in `window_s`; a success clears the account's."""

    def __init__(self, per_account: int = 5, per_client: int = 20, window_s: float = 300.0):
        self.limits = {"account": per_account, "client": per_client}
        self.window_s = window_s
        self._failures: dict[tuple[str, str], deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: tuple[str, str], now: float) -> deque[float]:
        times = self._failures.setdefault(key, deque())
        while times and times[0] <= now - self.window_s:
            times.popleft()
        return times

    def blocked(self, account: str, client: str) -> str | None:
        """Why this login attempt is refused before checking the password, or None."""
        now = time.monotonic()
        with self._lock:
            for kind, value in (("account", account), ("client", client)):
                if len(self._recent((kind, value), now)) >= self.limits[kind]:
                    return f"too many failed logins for this {kind}; try again in {int(self.window_s)} s"
        return None

    def failed(self, account: str, client: str) -> None:
        now = time.monotonic()
        with self._lock:
            for key in (("account", account), ("client", client)):
                self._recent(key, now).append(now)

    def succeeded(self, account: str) -> None:
        with self._lock:
            self._failures.pop(("account", account), None)


@dataclass(frozen=True)
class SessionUser:
    account: Account
    nonce: str  # per session; the CSRF token derives from it

    @property
    def name(self) -> str:
        return self.account.name

    @property
    def role(self) -> str:
        return self.account.role


class Auth:
    def __init__(self, store: ReviewStore, limiter: LoginLimiter | None = None):
        self.store = store
        self.secret = store.setting("session_secret", lambda: secrets.token_hex(32))
        self.limiter = limiter or LoginLimiter()
        self._sessions = URLSafeTimedSerializer(self.secret, salt="review-session")
        self._presentations = URLSafeTimedSerializer(self.secret, salt="review-presentation")

    # -- accounts ----------------------------------------------------------------------------------

    def login(self, name: str, password: str, client: str) -> Account:
        """The active account, or LoginRefused (rate-limited: status 429; wrong: 401)."""
        blocked = self.limiter.blocked(name, client)
        if blocked:
            raise LoginRefused(429, blocked)
        account = self.store.account(name)
        if account is None or not account.active or not verify_password(account.password_hash, password):
            self.limiter.failed(name, client)
            raise LoginRefused(401, "wrong account name or password, or the account is disabled")
        self.limiter.succeeded(name)
        return account

    def issue_api_token(self, account: Account) -> str:
        token = secrets.token_urlsafe(32)
        self.store.update_account(account.name, api_token_hash=token_digest(token))
        return token

    def account_for_token(self, token: str) -> Account | None:
        account = self.store.account_by_token(token_digest(token))
        return account if account is not None and account.active else None

    # -- sessions and CSRF ---------------------------------------------------------------------------

    def session_cookie(self, account: Account) -> str:
        return self._sessions.dumps({"a": account.account_id, "n": secrets.token_hex(16)})

    def session_user(self, cookie: str | None) -> SessionUser | None:
        if not cookie:
            return None
        try:
            data = self._sessions.loads(cookie, max_age=SESSION_MAX_AGE_S)
            account = self.store.account_by_id(int(data["a"]))
            nonce = str(data["n"])
        except (BadSignature, KeyError, TypeError, ValueError):
            return None
        return SessionUser(account, nonce) if account is not None and account.active else None

    def csrf_token(self, nonce: str) -> str:
        return hmac.new(self.secret.encode(), f"csrf:{nonce}".encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, nonce: str, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(self.csrf_token(nonce), token)

    # -- presentation tokens -------------------------------------------------------------------------

    def presentation(self, **shown) -> str:
        return self._presentations.dumps(shown | {"shown_at": time.time()})

    def presented(self, token: str, reviewer: str) -> tuple[dict, float]:
        """(what was shown, seconds since) for a token issued to `reviewer`; raises ValueError."""
        try:
            shown = self._presentations.loads(token, max_age=PRESENTATION_MAX_AGE_S)
        except SignatureExpired:
            raise ValueError("the presentation token has expired; load the item again") from None
        except BadSignature:
            raise ValueError("not a presentation token issued by this server") from None
        if not isinstance(shown, dict) or shown.get("reviewer") != reviewer:
            raise ValueError("this presentation token was issued to another account")
        return shown, max(0.0, time.time() - float(shown["shown_at"]))


class LoginRefused(Exception):
    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason
