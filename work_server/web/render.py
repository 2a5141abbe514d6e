"""Rendering for the web pages: the jinja2 environment and its filters, ``render`` (a
template with the context every page needs), the HTML error page, and the chart context of
a job (inline SVG from ``charts``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web

from work_server.web import charts
from work_server.web.auth import CSRF_FIELD, LoggedIn
from work_server.web.queries import JobView

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"


def ago(ts: float | None) -> str:
    if ts is None:
        return "never"
    s = max(0.0, time.time() - ts)
    if s < 60:
        return f"{s:.0f} s ago"
    if s < 3600:
        return f"{s / 60:.0f} min ago"
    if s < 86400:
        return f"{s / 3600:.1f} h ago"
    return f"{s / 86400:.1f} days ago"


def when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def filesize(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def setup_templates(app: web.Application) -> None:
    """Autoescaping everywhere and ``StrictUndefined``: a misspelt variable is an error, not
    an empty string."""
    filters: dict[str, Callable[..., str]] = {"ago": ago, "when": when, "filesize": filesize}
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
        undefined=jinja2.StrictUndefined,
        filters=filters,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render(
    request: web.Request,
    template: str,
    context: Mapping[str, Any] | None = None,
    *,
    status: int = 200,
    login: LoggedIn | None = None,
) -> web.Response:
    ctx: dict[str, Any] = {
        "login": login,
        "csrf_token": login.web_session.csrf_token if login else "",
        "csrf_field": CSRF_FIELD,
        "path": request.path,
        "now": time.time(),
    }
    ctx.update(context or {})
    response = aiohttp_jinja2.render_template(template, request, ctx, status=status)
    if login is not None:  # an operator's page must not outlive the session in a cache
        response.headers["Cache-Control"] = "no-store"
    return response


def error_page(
    request: web.Request, status: int, title: str, detail: str, login: LoggedIn | None = None
) -> web.Response:
    return render(
        request,
        "error.html",
        {"title": title, "detail": detail, "status": status},
        status=status,
        login=login,
    )


def job_charts(view: JobView | None, *, prefix: str) -> dict[str, Any]:
    """``chart`` (accuracy and loss per round) and ``heatmap`` (the confusion matrix) for
    ``_charts.html``; ``prefix`` keeps element ids unique on the page."""
    if view is None:
        return {"chart": None, "heatmap": None}
    ev = view.evaluated
    chart = charts.accuracy_loss_chart(
        [r.number for r in ev],
        [r.metrics.get("accuracy", 0.0) for r in ev],
        [r.metrics.get("loss", 0.0) for r in ev],
        total_rounds=view.spec.rounds,
        chart_id=f"{prefix}-accuracy-chart",
    )
    heatmap = (
        charts.confusion_heatmap(view.confusion, chart_id=f"{prefix}-confusion-heatmap")
        if view.confusion
        else None
    )
    return {"chart": chart, "heatmap": heatmap}
