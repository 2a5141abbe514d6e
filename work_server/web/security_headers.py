"""Security headers on every HTML page the server renders.

The pages need nothing from elsewhere: scripts, styles and images come from ``/static/``
(charts are inline SVG, ``data:`` images are allowed), so the policy allows only the
server itself, no inline script or style, no plugins, no framing, and forms that post only
back here. JSON, files and redirects are left as they are.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def security_headers_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    if isinstance(response, web.Response) and response.content_type == "text/html":
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
    return response
