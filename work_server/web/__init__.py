"""The operator's web pages, served by the work server itself (aiohttp-jinja2 templates,
server-rendered SVG charts, one small hand-written script for live updates).

``setup_web(app)`` composes them: the templates (``render``), the security headers on
every HTML answer (``security_headers``), the login state (``auth.WEB_AUTH``), each area's
routes (``views.*``) and the static files under ``/static/``. Nothing to build.

Public: ``/server-status`` (like BOINC's server status page), ``/login``. Operator (web
session, ``guard.operator``): ``/dashboard``, ``/jobs``, ``/jobs/{id}``, ``/hosts``,
``/datasets``, ``/tokens`` (the operator's own API tokens), ``/audit`` (the audit log) and
their forms. Each live part of a page has a ``.../live`` twin that
returns just that HTML fragment; ``static/live.js`` polls it and swaps it in, so the pages
update without a reload and read fine without JavaScript.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from work_server.web.auth import WEB_AUTH, WebAuth
from work_server.web.render import setup_templates
from work_server.web.security_headers import security_headers_middleware
from work_server.web.views import audit, dashboard, datasets, hosts, jobs, login, status, tokens

STATIC_DIR = Path(__file__).resolve().parent / "static"


def setup_web(app: web.Application, *, auth: WebAuth | None = None) -> None:
    setup_templates(app)
    app.middlewares.append(security_headers_middleware)
    app[WEB_AUTH] = auth or WebAuth()
    for area in (login, status, dashboard, jobs, datasets, hosts, tokens, audit):
        area.setup_routes(app)
    app.router.add_static("/static/", STATIC_DIR)
