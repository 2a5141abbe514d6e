"""The tokens page: the logged-in operator's own personal API tokens, a form that makes
one (shown once, on the answer to the form) and forms that revoke them.

Everything goes through ``services.api_tokens``, as ``/api/v1/tokens`` and ``yadml-server
token`` do, and is in the audit log. Another operator's token is 404 here, as if it did not
exist.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web
from yarl import URL

from work_server import keys
from work_server.api.common import int_param
from work_server.errors import Unprocessable
from work_server.services import api_tokens
from work_server.services.principal import Scope
from work_server.web.audit_actor import request_ip, web_actor
from work_server.web.auth import LoggedIn
from work_server.web.guard import operator, posted_form
from work_server.web.render import render

#: the expiry choices of the form (any ``parse_duration`` text is accepted when posted)
EXPIRY_CHOICES = [
    ("1d", "1 day"),
    ("7d", "7 days"),
    ("30d", "30 days"),
    ("90d", "90 days"),
    ("365d", "1 year"),
    ("never", "never"),
]
DEFAULT_EXPIRY = "30d"


async def _render_tokens(
    request: web.Request,
    login: LoggedIn,
    *,
    status: int = 200,
    new_token: str = "",
    errors: list[str] | None = None,
    values: dict[str, Any] | None = None,
) -> web.Response:
    async with request.app[keys.SESSIONMAKER]() as session:
        views = await api_tokens.list_tokens(session, operator_id=login.operator.id)
    return render(
        request,
        "tokens.html",
        {
            "tokens": views,
            "now": time.time(),
            "scopes": list(Scope),
            "expiry_choices": EXPIRY_CHOICES,
            "values": values or {"scopes": [Scope.read.value], "expires_in": DEFAULT_EXPIRY},
            "new_token": new_token,
            "errors": errors or [],
            "message": request.query.get("message", "")[:200],
        },
        status=status,
        login=login,
    )


@operator("page")
async def tokens_page(request: web.Request, login: LoggedIn) -> web.StreamResponse:
    return await _render_tokens(request, login)


@operator("form")
async def create_token(request: web.Request, login: LoggedIn) -> web.StreamResponse:
    form = await posted_form(request)
    scopes = [str(s) for s in form.getall("scopes", [])][:8]
    expires_in = str(form.get("expires_in", ""))[:32]
    note = str(form.get("note", ""))[:1000]
    values = {"scopes": scopes, "expires_in": expires_in, "note": note}
    try:
        async with request.app[keys.SESSIONMAKER]() as session:
            token, _ = await api_tokens.create_token(
                session,
                operator=login.operator.username,
                scopes=scopes,
                expires_in_s=api_tokens.parse_duration(expires_in),
                note=note,
                actor=web_actor(login),
                client_ip=request_ip(request),
                now=time.time(),
            )
    except Unprocessable as exc:
        return await _render_tokens(request, login, status=422, errors=[exc.detail], values=values)
    # the token is in this answer only (operator pages are no-store): never in a redirect URL
    return await _render_tokens(request, login, new_token=token)


@operator("form")
async def revoke_token(request: web.Request, login: LoggedIn) -> web.StreamResponse:
    token_id = int_param(request, "token_id")
    async with request.app[keys.SESSIONMAKER]() as session:
        await api_tokens.revoke_token(
            session,
            token_id,
            actor=web_actor(login),
            client_ip=request_ip(request),
            now=time.time(),
            owner_id=login.operator.id,
        )
    target = URL("/tokens").with_query(message=f"Token {token_id} revoked.")
    raise web.HTTPSeeOther(location=str(target))


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/tokens", tokens_page, name="web_tokens")
    app.router.add_post("/tokens", create_token, name="web_tokens_post")
    app.router.add_post("/tokens/{token_id}/revoke", revoke_token, name="web_token_revoke")
