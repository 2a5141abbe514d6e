"""The check at the top of every operator endpoint: who is calling, with which scopes.

``authorize(request, scope)`` reads the bearer token, lets ``services.api_tokens`` turn it
into a ``Principal`` (401 for no, an unknown, an expired or a revoked token) and refuses a
principal without ``scope`` (403 ``insufficient_scope``, naming the scope).
``request_ip`` is where the request came from, for the audit log (``X-Forwarded-For`` only
from a trusted proxy), on the API and the web pages alike.
"""

from __future__ import annotations

import time

from aiohttp import web

from work_server import keys
from work_server.auth import bearer_token
from work_server.ratelimit import client_ip
from work_server.services import api_tokens
from work_server.services.principal import Principal, Scope, require


async def authorize(request: web.Request, scope: Scope) -> Principal:
    token = bearer_token(request)
    async with request.app[keys.SESSIONMAKER]() as session:
        principal = await api_tokens.authenticate(
            session,
            token,
            bootstrap_token=request.app[keys.CONFIG].operator_token,
            now=time.time(),
        )
    require(principal, scope)
    return principal


def request_ip(request: web.Request) -> str:
    return client_ip(request, request.app[keys.CONFIG].trusted_proxies)
