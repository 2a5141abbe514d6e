"""The hosts page: every registered volunteer host, and the forms that ban or unban one.

Banning goes through ``services.hosts.set_banned``, the same as the API's
``POST /api/v1/hosts/{id}/ban``: a banned host is refused on every request, and its results
in progress are revoked and reissued to others at once.
"""

from __future__ import annotations

import logging
import time
from functools import partial

from aiohttp import web
from yarl import URL

from work_server import keys
from work_server.api.common import int_param, wake_transitioner
from work_server.services import hosts as host_service
from work_server.web import queries
from work_server.web.audit_actor import request_ip, web_actor
from work_server.web.auth import LoggedIn
from work_server.web.guard import operator
from work_server.web.render import render

log = logging.getLogger(__name__)


@operator("page")
async def hosts_page(request: web.Request, login: LoggedIn) -> web.StreamResponse:
    async with request.app[keys.SESSIONMAKER]() as session:
        rows = await queries.hosts(session)
    return render(
        request,
        "hosts.html",
        {"hosts": rows, "message": request.query.get("message", "")[:200]},
        login=login,
    )


async def _set_banned(request: web.Request, login: LoggedIn, banned: bool) -> web.StreamResponse:
    host_id = int_param(request, "host_id")
    async with request.app[keys.SESSIONMAKER]() as session:
        host = await host_service.ban_host(
            session,
            host_id,
            banned,
            actor=web_actor(login),
            client_ip=request_ip(request),
            now=time.time(),
            wake=partial(wake_transitioner, request.app),
        )
    verb = "banned" if banned else "unbanned"
    log.warning(
        "host %s (%s) %s from the web pages by %s",
        host_id,
        host.name,
        verb,
        login.operator.username,
    )
    target = URL("/hosts").with_query(message=f"Host {host_id} ({host.name}) {verb}.")
    raise web.HTTPSeeOther(location=str(target))


@operator("form")
async def ban_host(request: web.Request, login: LoggedIn) -> web.StreamResponse:
    return await _set_banned(request, login, True)


@operator("form")
async def unban_host(request: web.Request, login: LoggedIn) -> web.StreamResponse:
    return await _set_banned(request, login, False)


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/hosts", hosts_page, name="web_hosts")
    app.router.add_post("/hosts/{host_id}/ban", ban_host, name="web_host_ban")
    app.router.add_post("/hosts/{host_id}/unban", unban_host, name="web_host_unban")
