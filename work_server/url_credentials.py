"""Credentials travel in headers, never in URLs.

A URL is written down everywhere on its way: reverse-proxy and access logs, browser
history, ``Referer`` headers, shell history. So the server refuses any request whose query
string has a parameter that looks like a credential (``?grant=``, ``?token=``,
``?access_token=``, ...), before any handler runs: a secret sent that way is never accepted,
and a client that tries learns at once where it belongs instead of working by accident.
The access log (``work_server.access_log``) drops query strings as a second line of defence.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from aiohttp import web

from work_server.api.common import Handler, error_response
from yadml_common.wire import UPLOAD_GRANT_HEADER

__all__ = ["CREDENTIAL_WORDS", "credential_params", "refuse_url_credentials"]

#: A query parameter whose name has one of these words (split on ``_``, ``-``, ``.``, case
#: ignored) is taken for a credential: ``token``, ``access_token``, ``X-Upload-Grant``,
#: ``api_key``, ``session_id``. None of the server's own parameters (``next``, ``message``,
#: ``logged_out``) does.
CREDENTIAL_WORDS = frozenset(
    {
        "grant",
        "token",
        "auth",
        "authorization",
        "bearer",
        "key",
        "apikey",
        "password",
        "passwd",
        "secret",
        "credential",
        "credentials",
        "session",
        "sessionid",
        "signature",
        "sig",
    }
)

_WORD_SPLIT = re.compile(r"[-_.\s]+")

CODE = "credential_in_url"


def _is_credential(name: str) -> bool:
    return any(word in CREDENTIAL_WORDS for word in _WORD_SPLIT.split(name.lower()))


def credential_params(names: Iterable[str]) -> list[str]:
    """The names among ``names`` (query parameter names) that look like credentials."""
    return sorted({name for name in names if _is_credential(name)})


def _reason(names: list[str]) -> str:
    where = (
        f"send the upload grant in the {UPLOAD_GRANT_HEADER} header"
        if any("grant" in _WORD_SPLIT.split(n.lower()) for n in names)
        else "send tokens in the Authorization header (Bearer)"
    )
    listed = ", ".join(repr(n) for n in names)
    return f"credentials are never accepted in a URL (query parameter {listed}): {where}"


@web.middleware
async def refuse_url_credentials(request: web.Request, handler: Handler) -> web.StreamResponse:
    """400 ``credential_in_url`` for a query string with a credential-like parameter."""
    names = credential_params(request.query.keys())
    if not names:
        return await handler(request)
    response = error_response(400, CODE, _reason(names))
    if request.body_exists:
        response.force_close()  # an upload's body is not read: do not drain it either
    return response
