"""The operator guard of the web pages, and the posted form it reads.

``@operator(access)`` wraps a handler ``(request, login) -> response``:

* no web session: a ``"page"`` redirects (303) to ``/login?next=<this page>``; a ``"form"``
  post or a live ``"fragment"`` answers 401 (a redirect would swap a login page into the
  fragment, or lose the posted form);
* a ``"form"`` also needs the session's CSRF token, in the ``csrf_token`` field or the
  ``X-CSRF-Token`` header (``static/live.js``), else 403;
* a ``DomainError`` the handler raises becomes an HTML error page with its status (the
  API's error middleware would answer JSON).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from multidict import MultiDictProxy
from yarl import URL

from work_server.errors import DomainError
from work_server.web.auth import CSRF_FIELD, Access, LoggedIn, csrf_ok, current_login
from work_server.web.render import error_page

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
LoginHandler = Callable[[web.Request, LoggedIn], Awaitable[web.StreamResponse]]

_FORM_KEY: web.RequestKey[MultiDictProxy[Any]] = web.RequestKey("yadml_web_form")


async def posted_form(request: web.Request) -> MultiDictProxy[Any]:
    """The posted form, multipart bodies included. Read once per request and kept on it:
    the guard reads the CSRF field before the handler reads the rest."""
    if _FORM_KEY not in request:
        request[_FORM_KEY] = await request.post()
    form: MultiDictProxy[Any] = request[_FORM_KEY]
    return form


async def _csrf_sent(request: web.Request) -> str:
    sent = request.headers.get("X-CSRF-Token")
    if sent is None:
        form = await posted_form(request)
        sent = str(form.get(CSRF_FIELD, ""))
    return sent


def operator(access: Access) -> Callable[[LoginHandler], Handler]:
    """Require a web session (and, for forms, its CSRF token); domain errors become HTML."""

    def wrap(handler: LoginHandler) -> Handler:
        @functools.wraps(handler)
        async def wrapped(request: web.Request) -> web.StreamResponse:
            login = await current_login(request)
            if login is None:
                if access == "page":
                    target = URL("/login").with_query(next=request.path_qs)
                    raise web.HTTPSeeOther(location=str(target))
                return error_page(request, 401, "Login required", "Log in to use this form.")
            if access == "form" and not csrf_ok(
                login.web_session.csrf_token, await _csrf_sent(request)
            ):
                return error_page(
                    request,
                    403,
                    "Form refused",
                    "The form's security token is missing or stale. Reload the page and try again.",
                    login,
                )
            try:
                return await handler(request, login)
            except DomainError as exc:
                return error_page(
                    request, exc.status, exc.code.replace("_", " "), exc.detail, login
                )

        return wrapped

    return wrap
