"""Logging in and out, and ``/`` (the dashboard for an operator, else the public status).

The login form has no session yet, so its CSRF token is a double-submit cookie; failed
attempts wait out ``LoginThrottle``'s growing delay before they are answered, and every
later attempt for the same user name or address waits before it is even checked.
"""

from __future__ import annotations

import logging
import time

from aiohttp import web

from work_server import keys
from work_server.services import audit
from work_server.services.principal import Principal
from work_server.web.audit_actor import request_ip
from work_server.web.auth import (
    CSRF_FIELD,
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    LoggedIn,
    check_login,
    csrf_ok,
    current_login,
    end_session,
    new_login_csrf,
    safe_next,
    set_cookie,
    start_session,
    web_auth,
)
from work_server.web.guard import operator, posted_form
from work_server.web.render import error_page, render

log = logging.getLogger(__name__)


async def root(request: web.Request) -> web.StreamResponse:
    login = await current_login(request)
    raise web.HTTPSeeOther(location="/dashboard" if login else "/server-status")


async def login_page(request: web.Request) -> web.StreamResponse:
    login = await current_login(request)
    if login is not None:
        raise web.HTTPSeeOther(location=safe_next(request.query.get("next")))
    return _login_form(request, status=200)


def _login_form(
    request: web.Request, *, status: int, error: str = "", username: str = ""
) -> web.Response:
    token = new_login_csrf()
    response = render(
        request,
        "login.html",
        {
            "login_csrf": token,
            "error": error,
            "username": username,
            "next": safe_next(request.query.get("next")),
            "logged_out": "logged_out" in request.query,
        },
        status=status,
    )
    response.headers["Cache-Control"] = "no-store"
    set_cookie(response, request, LOGIN_CSRF_COOKIE, token)
    return response


async def login_post(request: web.Request) -> web.StreamResponse:
    form = await posted_form(request)
    if not csrf_ok(request.cookies.get(LOGIN_CSRF_COOKIE), form.get(CSRF_FIELD)):
        return error_page(
            request,
            403,
            "Form refused",
            "The login form's security token is missing or stale. Reload the page and retry.",
        )
    username = str(form.get("username", "")).strip()[:64]
    password = str(form.get("password", ""))[:1024]
    auth = web_auth(request)
    throttle = auth.throttle
    login_keys = [f"user:{username.lower()}", f"addr:{request.remote or '?'}"]
    owed = throttle.delay_for(login_keys)
    if owed > 0:  # earlier failures: every further attempt waits first
        await throttle.sleep(owed)
    async with request.app[keys.SESSIONMAKER]() as session:
        op = await check_login(session, username, password, passwords=auth.passwords)
        if op is None:
            delay = throttle.failed(login_keys)
            log.warning("failed web login for %r from %s", username, request.remote)
            audit.record(
                session,
                actor=Principal(operator=username, scopes=frozenset(), via="web"),
                action=audit.Action.login_failure,
                target=f"operator:{username}",
                client_ip=request_ip(request),
                now=time.time(),
            )
            await session.commit()
            await throttle.sleep(delay)
            return _login_form(
                request, status=401, error="Wrong user name or password.", username=username
            )
        throttle.succeeded(username.lower())
        config = request.app[keys.CONFIG]
        token, web_session = await start_session(session, op, time.time(), config.web_session_ttl_s)
        audit.record(
            session,
            actor=Principal.web(op.username, web_session.token_hash),
            action=audit.Action.login_success,
            target=f"operator:{op.username}",
            client_ip=request_ip(request),
            now=time.time(),
        )
        await session.commit()
    response = web.HTTPSeeOther(location=safe_next(str(form.get("next", "")) or None))
    set_cookie(response, request, SESSION_COOKIE, token)
    response.del_cookie(LOGIN_CSRF_COOKIE, path="/")
    raise response


@operator("form")
async def logout(request: web.Request, login: LoggedIn) -> web.StreamResponse:
    await end_session(request)
    response = web.HTTPSeeOther(location="/login?logged_out=1")
    response.del_cookie(SESSION_COOKIE, path="/")
    raise response


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/", root, name="web_root")
    app.router.add_get("/login", login_page, name="web_login")
    app.router.add_post("/login", login_post, name="web_login_post")
    app.router.add_post("/logout", logout, name="web_logout")
