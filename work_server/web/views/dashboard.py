"""The operator's dashboard: the job in focus (the oldest unfinished one, else the newest)
with its charts and metrics, the current round's results, and the hosts active now.

``/dashboard/live`` is the same content without the page around it; ``static/live.js``
polls it and swaps it in.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from work_server import keys
from work_server.web import queries
from work_server.web.auth import LoggedIn
from work_server.web.guard import operator
from work_server.web.render import job_charts, render


async def _dashboard_context(request: web.Request) -> dict[str, Any]:
    async with request.app[keys.SESSIONMAKER]() as session:
        data = await queries.dashboard(session, now=time.time())
    ctx: dict[str, Any] = {"d": data, "metric_columns": queries.METRIC_COLUMNS}
    ctx.update(job_charts(data.view, prefix="dash"))
    return ctx


@operator("page")
async def dashboard(request: web.Request, login: LoggedIn) -> web.StreamResponse:
    return render(request, "dashboard.html", await _dashboard_context(request), login=login)


@operator("fragment")
async def dashboard_live(request: web.Request, login: LoggedIn) -> web.StreamResponse:
    return render(request, "_dashboard_live.html", await _dashboard_context(request), login=login)


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/dashboard", dashboard, name="web_dashboard")
    app.router.add_get("/dashboard/live", dashboard_live, name="web_dashboard_live")
