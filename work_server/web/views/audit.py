"""The audit log page: every state-changing operator action, newest first, a page at a
time (``?before=<id>`` is the next, older page), from ``services.audit`` as
``GET /api/v1/audit`` reads it."""

from __future__ import annotations

from aiohttp import web

from work_server import keys
from work_server.errors import BadRequest
from work_server.services import audit
from work_server.web.auth import LoggedIn
from work_server.web.guard import operator
from work_server.web.render import render

PAGE_SIZE = 50
_MAX_ID_DIGITS = 18


def _before(request: web.Request) -> int | None:
    raw = request.query.get("before")
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or len(raw) > _MAX_ID_DIGITS:
        raise BadRequest("before must be an event id (a positive integer)")
    return int(raw)


@operator("page")
async def audit_page(request: web.Request, login: LoggedIn) -> web.StreamResponse:
    before = _before(request)
    async with request.app[keys.SESSIONMAKER]() as session:
        page = await audit.list_events(session, limit=PAGE_SIZE, before=before)
    return render(
        request,
        "audit.html",
        {"events": page.events, "next_before": page.next_before, "paged": before is not None},
        login=login,
    )


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/audit", audit_page, name="web_audit")
