"""The public server-status page (like BOINC's), and its live fragment.

Anyone may read it: it shows counts and daemon health, nothing about a job's data. A
logged-in operator sees the usual navigation around it.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from work_server import keys
from work_server.services.status import status_overview
from work_server.web.auth import current_login
from work_server.web.render import render


async def _status_context(request: web.Request) -> dict[str, Any]:
    async with request.app[keys.SESSIONMAKER]() as session:
        overview = await status_overview(session, now=time.time())
    return {"status": overview}


async def server_status_page(request: web.Request) -> web.StreamResponse:
    login = await current_login(request)
    return render(request, "status.html", await _status_context(request), login=login)


async def server_status_live(request: web.Request) -> web.StreamResponse:
    return render(request, "_status_live.html", await _status_context(request))


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/server-status", server_status_page, name="web_status")
    app.router.add_get("/server-status/live", server_status_live, name="web_status_live")
