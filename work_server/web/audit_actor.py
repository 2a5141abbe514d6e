"""Who acts on the web pages, for the audit log: the logged-in operator as a ``Principal``
(``via`` web, tagged with a prefix of the session's stored hash) and the client address
(``X-Forwarded-For`` only from a trusted proxy, as on the API)."""

from __future__ import annotations

from work_server.api.operator_auth import request_ip
from work_server.services.principal import Principal
from work_server.web.auth import LoggedIn

__all__ = ["request_ip", "web_actor"]


def web_actor(login: LoggedIn) -> Principal:
    return Principal.web(login.operator.username, login.web_session.token_hash)
