"""The server's access log: one INFO line per request, with nothing secret in it.

aiohttp's own access logger writes the request line (query string included) and can be
told to write any header; both are where credentials leak. This one writes only::

    <client ip> "<METHOD> <path>" <status> <bytes> <seconds>s

- the path as the client sent it (percent-encoded, so a log line cannot be forged with
  an encoded newline), **without its query string**: the server refuses credentials in
  URLs (``work_server.url_credentials``), and this makes sure a refused one is not written
  down either; a web page's ``?message=`` is not worth logging;
- no header at all (``Authorization``, ``X-Upload-Grant``, cookies, ``Referer`` may all
  hold a secret);
- the client address by the rate limiter's rules (``ratelimit.client_ip``: the proxy's
  ``X-Forwarded-For`` hop only behind a trusted proxy).

Every line is INFO, whatever the status: a 4xx is the client's problem, and the server's
own errors are logged where they happen. ``yadml-server serve --no-access-log`` turns it
off; ``--log-level WARNING`` hides it too.
"""

from __future__ import annotations

import logging
from typing import ClassVar, cast

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest

from work_server.ratelimit import client_ip

__all__ = ["ACCESS_LOGGER_NAME", "MAX_LOGGED_PATH", "RedactingAccessLogger", "access_line"]

#: aiohttp's name for it: ``web.run_app`` hands this logger to the access logger class
ACCESS_LOGGER_NAME = "aiohttp.access"
#: longer paths are cut (and marked ``...``): one request must not make a megabyte line
MAX_LOGGED_PATH = 512


def _client(request: BaseRequest, trusted_proxies: frozenset[str]) -> str:
    if isinstance(request, web.Request):
        return client_ip(request, trusted_proxies)
    return request.remote or "-"


def _path(request: BaseRequest) -> str:
    path = request.rel_url.raw_path  # without the query string, still percent-encoded
    if len(path) > MAX_LOGGED_PATH:
        return path[:MAX_LOGGED_PATH] + "..."
    return path


def access_line(
    request: BaseRequest,
    response: web.StreamResponse,
    seconds: float,
    *,
    trusted_proxies: frozenset[str] = frozenset(),
) -> str:
    """The log line of one request (see the module docstring)."""
    return (
        f'{_client(request, trusted_proxies)} "{request.method} {_path(request)}" '
        f"{response.status} {response.body_length} {seconds:.3f}s"
    )


class RedactingAccessLogger(AbstractAccessLogger):
    """``web.run_app(access_log_class=RedactingAccessLogger)``; its ``log_format`` is
    ignored: the format is fixed so that no option can bring a header or query back."""

    #: believe ``X-Forwarded-For`` from these reverse proxies (``behind``)
    trusted_proxies: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def behind(cls, trusted_proxies: frozenset[str]) -> type[RedactingAccessLogger]:
        """This logger class, believing ``X-Forwarded-For`` from ``trusted_proxies``.

        aiohttp builds an access logger from ``(logger, log_format)`` alone, so the
        server's trusted proxies ride on a subclass instead of a constructor argument.
        """
        attrs = {"trusted_proxies": frozenset(trusted_proxies)}
        return cast(type[RedactingAccessLogger], type(cls.__name__, (cls,), attrs))

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)

    def log(self, request: BaseRequest, response: web.StreamResponse, time: float) -> None:
        line = access_line(request, response, time, trusted_proxies=self.trusted_proxies)
        self.logger.info("%s", line)
