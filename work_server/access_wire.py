"""JSON bodies of the operator API's access endpoints: personal tokens (``/api/v1/tokens``)
and the audit log (``/api/v1/audit``). Converted from the services' rows here, so handlers
only translate."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import Field

from work_server.db.models import AuditEvent
from work_server.services.api_tokens import MAX_EXPIRY_S, MAX_NOTE_CHARS, MIN_EXPIRY_S, TokenView
from work_server.services.principal import Scope
from yadml_common.wire import WireModel


def _dt(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, tz=UTC)


class TokenCreateRequest(WireModel):
    """``POST /api/v1/tokens`` (admin): a token for ``operator`` with these scopes."""

    operator: str = Field(min_length=1, max_length=64, description="the owner's user name")
    scopes: list[Scope] = Field(min_length=1, max_length=4)
    expires_in_s: int | None = Field(
        default=None,
        ge=MIN_EXPIRY_S,
        le=MAX_EXPIRY_S,
        description="seconds until it stops working; null: never",
    )
    note: str = Field(default="", max_length=MAX_NOTE_CHARS, description="what it is for")


class TokenInfo(WireModel):
    """A token as listed: never the token itself."""

    id: int
    operator: str
    scopes: list[Scope]
    note: str
    state: Literal["active", "expired", "revoked"]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    @classmethod
    def of(cls, view: TokenView, now: float) -> TokenInfo:
        return cls(**_info_fields(view, now))


class TokenCreated(TokenInfo):
    """The answer to ``POST /api/v1/tokens``: the only time ``token`` is ever shown."""

    token: str

    @classmethod
    def made(cls, token: str, view: TokenView, now: float) -> TokenCreated:
        return cls(token=token, **_info_fields(view, now))


def _info_fields(view: TokenView, now: float) -> dict[str, Any]:
    t = view.token
    assert t.id is not None
    return {
        "id": t.id,
        "operator": view.operator,
        "scopes": view.scopes,
        "note": t.note,
        "state": view.state(now),
        "created_at": _dt(t.created_at),
        "expires_at": _dt(t.expires_at),
        "revoked_at": _dt(t.revoked_at),
        "last_used_at": _dt(t.last_used_at),
    }


class TokenList(WireModel):
    tokens: list[TokenInfo]


class AuditEventInfo(WireModel):
    """Who (``operator``; ``via``, ``token_id`` / ``session_tag``), what (``action``,
    ``target``, ``detail``), when (``at``) and from where (``client_ip``)."""

    id: int
    at: datetime
    operator: str
    via: Literal["api", "web", "cli"]
    token_id: int | None
    session_tag: str | None
    action: str
    target: str
    detail: dict[str, Any]
    client_ip: str | None

    @classmethod
    def of(cls, event: AuditEvent) -> AuditEventInfo:
        assert event.id is not None
        return cls(
            id=event.id,
            at=datetime.fromtimestamp(event.at, tz=UTC),
            operator=event.operator,
            via=event.via,  # written from Principal.via only
            token_id=event.token_id,
            session_tag=event.session_tag,
            action=event.action,
            target=event.target,
            detail=event.detail,
            client_ip=event.client_ip,
        )


class AuditLog(WireModel):
    """``GET /api/v1/audit``: events newest first; pass ``next_before`` as ``?before=`` for
    the next, older page (null on the last one)."""

    events: list[AuditEventInfo]
    next_before: int | None
