"""Handlers of the operator API's access endpoints: personal tokens (admin scope) and the
audit log (read scope). The services do the work and record the audit events; these only
translate HTTP.

* ``POST /api/v1/tokens``: a token for an operator (the answer shows it, once);
* ``GET /api/v1/tokens[?operator=NAME]``: tokens, never their secrets;
* ``DELETE /api/v1/tokens/{id}``: revoke one (revoking twice changes nothing);
* ``GET /api/v1/audit?limit=&before=``: the audit log, newest first, paged by id.
"""

from __future__ import annotations

import time

from aiohttp import web

from work_server import keys
from work_server.access_wire import (
    AuditEventInfo,
    AuditLog,
    TokenCreated,
    TokenCreateRequest,
    TokenInfo,
    TokenList,
)
from work_server.api.common import int_param, json_body, json_response
from work_server.api.operator_auth import authorize, request_ip
from work_server.errors import BadRequest
from work_server.services import api_tokens, audit
from work_server.services.principal import Scope
from yadml_common.wire import API_PREFIX

routes = web.RouteTableDef()

DEFAULT_AUDIT_PAGE = 100
#: query ids are bounded like path ids: 18 digits fit SQLite's and PostgreSQL's BIGINT
_MAX_ID_DIGITS = 18


def _int_query(request: web.Request, name: str, *, low: int, high: int) -> int | None:
    """An optional integer query parameter (None when absent); 400 unless low..high."""
    raw = request.query.get(name)
    if raw is None:
        return None
    if not raw.isdigit() or len(raw) > _MAX_ID_DIGITS or not low <= int(raw) <= high:
        raise BadRequest(f"{name} must be an integer from {low} to {high}", code="bad_query")
    return int(raw)


@routes.post(f"{API_PREFIX}/tokens")
async def create_token(request: web.Request) -> web.Response:
    principal = await authorize(request, Scope.admin)
    body = await json_body(request, TokenCreateRequest)
    now = time.time()
    async with request.app[keys.SESSIONMAKER]() as session:
        token, view = await api_tokens.create_token(
            session,
            operator=body.operator,
            scopes=body.scopes,
            expires_in_s=body.expires_in_s,
            note=body.note,
            actor=principal,
            client_ip=request_ip(request),
            now=now,
        )
    return json_response(TokenCreated.made(token, view, now), status=201)


@routes.get(f"{API_PREFIX}/tokens")
async def list_tokens(request: web.Request) -> web.Response:
    await authorize(request, Scope.admin)
    operator = request.query.get("operator")
    if operator is not None and not 1 <= len(operator) <= 64:
        raise BadRequest("operator is a user name of 1 to 64 characters", code="bad_query")
    async with request.app[keys.SESSIONMAKER]() as session:
        views = await api_tokens.list_tokens(session, operator=operator)
    now = time.time()
    return json_response(TokenList(tokens=[TokenInfo.of(v, now) for v in views]))


@routes.delete(f"{API_PREFIX}/tokens/{{token_id}}")
async def revoke_token(request: web.Request) -> web.Response:
    principal = await authorize(request, Scope.admin)
    token_id = int_param(request, "token_id")
    now = time.time()
    async with request.app[keys.SESSIONMAKER]() as session:
        view = await api_tokens.revoke_token(
            session, token_id, actor=principal, client_ip=request_ip(request), now=now
        )
    return json_response(TokenInfo.of(view, now))


@routes.get(f"{API_PREFIX}/audit")
async def audit_log(request: web.Request) -> web.Response:
    await authorize(request, Scope.read)
    limit = _int_query(request, "limit", low=1, high=audit.MAX_PAGE) or DEFAULT_AUDIT_PAGE
    before = _int_query(request, "before", low=1, high=10**_MAX_ID_DIGITS - 1)
    async with request.app[keys.SESSIONMAKER]() as session:
        page = await audit.list_events(session, limit=limit, before=before)
    return json_response(
        AuditLog(events=[AuditEventInfo.of(e) for e in page.events], next_before=page.next_before)
    )
