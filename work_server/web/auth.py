"""Operators of the web pages: argon2id passwords, session cookies, CSRF tokens and the
brute-force delay on failed logins.

* **Passwords** are hashed with argon2id (``argon2-cffi``'s RFC 9106 defaults); hashing and
  verifying run in a thread so the event loop keeps serving. An unknown user name is
  verified against a dummy hash, so both failures cost the same time.
* **Sessions**: the cookie ``yadml_session`` holds a 256-bit random token; the database keeps
  only its sha256 (``WebSession``), with an absolute expiry. The cookie is ``HttpOnly``,
  ``SameSite=Strict``, ``Path=/``, and ``Secure`` when the request or the public URL is https
  (or always/never with ``ServerConfig.cookie_secure``). Logging out deletes the row.
* **CSRF**: every form of a logged-in operator carries the session's synchronizer token in
  a hidden ``csrf_token`` field, compared in constant time. The login form (no session yet)
  uses a double-submit cookie ``yadml_login_csrf``.
* **Brute force**: each failed login for a user name or from an address doubles a delay
  (1 s, 2 s, 4 s ... up to 30 s, forgotten after 15 minutes of quiet) that is awaited before
  the answer, and before the next attempts are even checked. ``LoginThrottle.sleep`` is the
  injected ``asyncio.sleep`` (tests record the delays instead of waiting).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import delete
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from work_server import keys
from work_server.db.models import Operator, WebSession
from work_server.errors import Conflict, Unprocessable

SESSION_COOKIE = "yadml_session"
LOGIN_CSRF_COOKIE = "yadml_login_csrf"
CSRF_FIELD = "csrf_token"
USERNAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
MIN_PASSWORD_LEN = 10
MAX_PASSWORD_LEN = 1024

Sleep = Callable[[float], Awaitable[Any]]


# ----------------------------------------------------------------------------- passwords


class Passwords:
    """argon2id hashing; the blocking work runs in a thread."""

    def __init__(self, hasher: PasswordHasher | None = None) -> None:
        self.hasher = hasher or PasswordHasher()
        self._dummy: str | None = None

    def hash_sync(self, password: str) -> str:
        return self.hasher.hash(password)

    def verify_sync(self, password_hash: str | None, password: str) -> bool:
        if password_hash is None:  # unknown user: spend the same time, then fail
            if self._dummy is None:
                self._dummy = self.hasher.hash(secrets.token_urlsafe(16))
            password_hash = self._dummy
            password = password + "\0never"
        try:
            return self.hasher.verify(password_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    async def verify(self, password_hash: str | None, password: str) -> bool:
        return await asyncio.to_thread(self.verify_sync, password_hash, password)


def check_new_credentials(username: str, password: str) -> None:
    if not USERNAME_RE.match(username):
        raise Unprocessable("user names are 1-64 letters, digits or _ . @ -")
    if not MIN_PASSWORD_LEN <= len(password) <= MAX_PASSWORD_LEN:
        raise Unprocessable(f"passwords need {MIN_PASSWORD_LEN} to {MAX_PASSWORD_LEN} characters")


async def create_operator(
    session: AsyncSession,
    username: str,
    password: str,
    *,
    passwords: Passwords,
    now: float,
    replace: bool = False,
) -> Operator:
    """Create an operator (or, with ``replace``, set an existing one's password). Commits."""
    check_new_credentials(username, password)
    password_hash = await asyncio.to_thread(passwords.hash_sync, password)
    existing = (
        await session.exec(select(Operator).where(Operator.username == username))
    ).one_or_none()
    if existing is not None and not replace:
        raise Conflict(f"operator {username!r} exists", code="operator_exists")
    op = existing or Operator(username=username, password_hash=password_hash, created_at=now)
    op.password_hash = password_hash
    session.add(op)
    if existing is not None:  # a new password logs every browser out
        await session.exec(delete(WebSession).where(col(WebSession.operator_id) == existing.id))
    await session.commit()
    await session.refresh(op)
    return op


async def check_login(
    session: AsyncSession, username: str, password: str, *, passwords: Passwords
) -> Operator | None:
    """The operator with this user name and password, else None; an unknown name costs the
    same hashing time as a wrong password."""
    op = (await session.exec(select(Operator).where(Operator.username == username))).one_or_none()
    ok = await passwords.verify(op.password_hash if op else None, password)
    return op if ok and op is not None else None


# ----------------------------------------------------------------------------- brute force


@dataclass
class LoginThrottle:
    """Exponential delay per key (``user:<name>``, ``addr:<ip>``) after failed logins."""

    base_delay_s: float = 1.0
    max_delay_s: float = 30.0
    window_s: float = 900.0
    max_keys: int = 10_000
    sleep: Sleep = asyncio.sleep
    clock: Callable[[], float] = time.monotonic
    _failures: dict[str, tuple[int, float]] = field(default_factory=dict)  # key -> (n, last)

    def _count(self, key: str, now: float) -> int:
        n, last = self._failures.get(key, (0, 0.0))
        if n and now - last > self.window_s:
            del self._failures[key]
            return 0
        return n

    def delay_for(self, login_keys: list[str]) -> float:
        """The delay owed before checking another attempt for these keys."""
        now = self.clock()
        n = max((self._count(k, now) for k in login_keys), default=0)
        return 0.0 if n == 0 else min(self.base_delay_s * 2 ** (n - 1), self.max_delay_s)

    def failed(self, login_keys: list[str]) -> float:
        """Record a failure; returns the delay to await before answering it."""
        now = self.clock()
        if len(self._failures) >= self.max_keys:
            for k in [k for k, (_, last) in self._failures.items() if now - last > self.window_s]:
                del self._failures[k]
            if len(self._failures) >= self.max_keys:
                self._failures.clear()
        for k in login_keys:
            self._failures[k] = (self._count(k, now) + 1, now)
        return self.delay_for(login_keys)

    def succeeded(self, username: str) -> None:
        self._failures.pop(f"user:{username}", None)


# ----------------------------------------------------------------------------- app state


@dataclass
class WebAuth:
    passwords: Passwords = field(default_factory=Passwords)
    throttle: LoginThrottle = field(default_factory=LoginThrottle)


WEB_AUTH = web.AppKey("web_auth", WebAuth)


def web_auth(request: web.Request) -> WebAuth:
    return request.app[WEB_AUTH]


# ----------------------------------------------------------------------------- sessions


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def cookie_secure(request: web.Request) -> bool:
    config = request.app[keys.CONFIG]
    if config.cookie_secure is not None:
        return config.cookie_secure
    return request.secure or (config.public_url or "").startswith("https://")


def set_cookie(response: web.StreamResponse, request: web.Request, name: str, value: str) -> None:
    response.set_cookie(
        name,
        value,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=cookie_secure(request),
    )


async def start_session(
    session: AsyncSession, operator: Operator, now: float, ttl_s: float
) -> tuple[str, WebSession]:
    assert operator.id is not None
    token = secrets.token_urlsafe(32)
    row = WebSession(
        token_hash=_hash(token),
        operator_id=operator.id,
        csrf_token=secrets.token_urlsafe(32),
        created_at=now,
        expires_at=now + ttl_s,
        last_seen=now,
    )
    session.add(row)
    operator.last_login_at = now
    session.add(operator)
    # forget expired sessions while we are here
    await session.exec(delete(WebSession).where(col(WebSession.expires_at) < now))
    await session.commit()
    return token, row


@dataclass(frozen=True)
class LoggedIn:
    operator: Operator
    web_session: WebSession


_REQUEST_KEY: web.RequestKey[LoggedIn | None] = web.RequestKey("yadml_web_login")


async def current_login(request: web.Request) -> LoggedIn | None:
    """The operator of this request's session cookie (cached on the request), or None."""
    if _REQUEST_KEY in request:
        cached: LoggedIn | None = request[_REQUEST_KEY]
        return cached
    found: LoggedIn | None = None
    token = request.cookies.get(SESSION_COOKIE, "")
    if 20 <= len(token) <= 200:
        now = time.time()
        async with request.app[keys.SESSIONMAKER]() as session:
            row = (
                await session.exec(
                    select(WebSession, Operator)
                    .join(Operator, col(Operator.id) == WebSession.operator_id)
                    .where(WebSession.token_hash == _hash(token), WebSession.expires_at > now)
                )
            ).one_or_none()
            if row is not None:
                found = LoggedIn(operator=row[1], web_session=row[0])
    request[_REQUEST_KEY] = found
    return found


async def end_session(request: web.Request) -> None:
    token = request.cookies.get(SESSION_COOKIE, "")
    if token:
        async with request.app[keys.SESSIONMAKER]() as session:
            await session.exec(delete(WebSession).where(col(WebSession.token_hash) == _hash(token)))
            await session.commit()
    request[_REQUEST_KEY] = None


def csrf_ok(expected: str | None, sent: object) -> bool:
    if not expected or not isinstance(sent, str) or not sent:
        return False
    return hmac.compare_digest(expected.encode(), sent.encode())


def new_login_csrf() -> str:
    return secrets.token_urlsafe(32)


def safe_next(target: str | None) -> str:
    """A local path to go to after login (never another site: no ``//host`` or scheme)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/dashboard"
    return target


Access = Literal["page", "form", "fragment"]
