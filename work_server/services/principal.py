"""Who is acting on the operator side, and what they may do: ``Scope``, ``Principal`` and
``require``. Every operator endpoint gets a principal (``services.api_tokens.authenticate``
for the API; a web session or the command line make one too) and checks its scope; the
audit log (``services.audit``) records the principal of every state-changing action.

Scopes: ``read`` (every GET of the operator API), ``jobs`` (start and cancel jobs),
``hosts`` (ban and unban hosts), ``admin`` (all of these, and managing tokens). Only
``admin`` implies the others.
"""

from __future__ import annotations

import enum
import getpass
from dataclasses import dataclass
from typing import Literal

from work_server.errors import Forbidden


class Scope(enum.StrEnum):
    read = "read"
    jobs = "jobs"
    hosts = "hosts"
    admin = "admin"


#: the identity of the bootstrap operator token (``ServerConfig.operator_token``)
BOOTSTRAP_OPERATOR = "operator"

Via = Literal["api", "web", "cli"]


@dataclass(frozen=True)
class Principal:
    """An operator's name, the scopes they hold for this request, and the credential:
    ``via``; ``token_id`` of a personal API token (None for the bootstrap token, a web
    session or the command line); ``session_tag``, a short prefix of a web session's stored
    hash (names the session in the audit log without being a credential)."""

    operator: str
    scopes: frozenset[Scope]
    via: Via = "api"
    token_id: int | None = None
    session_tag: str | None = None

    def allows(self, scope: Scope) -> bool:
        return Scope.admin in self.scopes or scope in self.scopes

    @classmethod
    def bootstrap(cls) -> Principal:
        """The bootstrap operator token: an ``admin`` token of the built-in ``operator``."""
        return cls(operator=BOOTSTRAP_OPERATOR, scopes=frozenset({Scope.admin}))

    @classmethod
    def web(cls, username: str, session_hash: str) -> Principal:
        """A logged-in operator of the web pages (every web operator may do everything)."""
        return cls(
            operator=username,
            scopes=frozenset({Scope.admin}),
            via="web",
            session_tag=session_hash[:12],
        )

    @classmethod
    def cli(cls, user: str | None = None) -> Principal:
        """Someone at the server's shell (``yadml-server token|operator ...``): by default
        the login name of this process's user."""
        if user is None:
            try:
                user = getpass.getuser()
            except (KeyError, OSError):  # no name for this uid (some containers)
                user = "unknown"
        return cls(operator=user, scopes=frozenset({Scope.admin}), via="cli")


def require(principal: Principal, scope: Scope) -> None:
    """403 ``insufficient_scope`` unless ``principal`` holds ``scope`` (or ``admin``)."""
    if not principal.allows(scope):
        held = ",".join(sorted(principal.scopes)) or "none"
        raise Forbidden(
            f"this needs a token with the '{scope}' scope (or 'admin'); this one has: {held}",
            code="insufficient_scope",
        )
