"""The operator's web pages, served by the work server itself (aiohttp-jinja2 templates,
server-rendered SVG charts, one small hand-written script for live updates).

``setup_web(app)`` adds the templates, the pages (``work_server.web.pages``), the static
files under ``/static/`` and the login state (``auth.WEB_AUTH``). Nothing to build.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

from work_server.web import pages
from work_server.web.auth import WEB_AUTH, WebAuth

WEB_DIR = Path(__file__).resolve().parent


def setup_web(app: web.Application, *, auth: WebAuth | None = None) -> None:
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(WEB_DIR / "templates"),
        autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
        undefined=jinja2.StrictUndefined,
        filters=pages.FILTERS,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    app[WEB_AUTH] = auth or WebAuth()
    app.add_routes(pages.routes)
    app.router.add_static("/static/", WEB_DIR / "static")
