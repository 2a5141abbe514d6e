"""Operators' personal API tokens, and turning a bearer token into a ``Principal``.

A token belongs to an ``Operator`` (the people of ``yadml-server operator create``) and
carries scopes (``services.principal``): ``read`` (every GET of the operator API), ``jobs``
(start and cancel jobs), ``hosts`` (ban and unban hosts), ``admin`` (all of them, and
managing tokens). Only ``admin`` implies the others: ask for ``read,jobs`` to start jobs
and read them back.

A token is ``yadml_pat_`` + 256 random bits (``secrets.token_urlsafe(32)``), shown once when
it is made. The database keeps only its sha256: for a random 256-bit secret a plain hash is
the right storage (a slow KDF is for guessable passwords), and a lookup by hash compares
nothing byte by byte. A token stops working at its expiry or when revoked; revoked rows stay
so the audit log's token ids keep meaning something. ``last_used_at`` is written at most
once a minute per token.

The **bootstrap operator token** (``ServerConfig.operator_token``: ``YADML_OPERATOR_TOKEN``
or ``<state-dir>/operator_token``) is still accepted, compared in constant time, as an
``admin`` token of the built-in identity ``operator``: deployments use it to start, and to
make the first personal tokens. Keep it like a root password.

Creating and revoking tokens record an audit event in the same transaction
(``services.audit``).
"""

from __future__ import annotations

import hmac
import re
import secrets
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from work_server.auth import hash_token
from work_server.db.models import ApiToken, Operator
from work_server.errors import NotFound, Unauthorized, Unprocessable
from work_server.services import audit
from work_server.services.principal import Principal, Scope

TOKEN_PREFIX = "yadml_pat_"  # noqa: S105 (marks our tokens for secret scanners)
MAX_TOKEN_CHARS = 256
MAX_NOTE_CHARS = 200
MIN_EXPIRY_S = 60
MAX_EXPIRY_S = 3650 * 86400
#: ``last_used_at`` is written when it is older than this (not one write per request)
LAST_USED_RESOLUTION_S = 60.0
MAX_LISTED_TOKENS = 1000

TokenState = Literal["active", "expired", "revoked"]

_DURATION_RE = re.compile(r"^([0-9]{1,7})\s*([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclass(frozen=True)
class TokenView:
    """A token row with its owner's name (never the token itself)."""

    token: ApiToken
    operator: str

    def state(self, now: float) -> TokenState:
        if self.token.revoked_at is not None:
            return "revoked"
        if self.token.expires_at is not None and self.token.expires_at <= now:
            return "expired"
        return "active"

    @property
    def scopes(self) -> list[Scope]:
        return sorted(Scope(s) for s in self.token.scopes)


# ----------------------------------------------------------------------------- checks


def parse_scopes(scopes: str | Iterable[str]) -> frozenset[Scope]:
    """``"read,jobs"`` (or a list of names) as scopes; 422 ``invalid_scope`` for an unknown
    name or none at all."""
    names = scopes.split(",") if isinstance(scopes, str) else list(scopes)
    parsed: set[Scope] = set()
    for name in (n.strip() for n in names):
        if not name:
            continue
        try:
            parsed.add(Scope(name))
        except ValueError:
            known = ", ".join(s.value for s in Scope)
            raise Unprocessable(
                f"unknown scope {name[:32]!r}; the scopes are {known}", code="invalid_scope"
            ) from None
    if not parsed:
        raise Unprocessable("a token needs at least one scope", code="invalid_scope")
    return frozenset(parsed)


def check_expiry_s(seconds: float | None) -> float | None:
    if seconds is None:
        return None
    if not MIN_EXPIRY_S <= seconds <= MAX_EXPIRY_S:
        raise Unprocessable(
            f"a token expires between {MIN_EXPIRY_S} s and {MAX_EXPIRY_S // 86400} days from now",
            code="invalid_expiry",
        )
    return float(seconds)


def parse_duration(text: str) -> float | None:
    """``"30d"``, ``"12h"``, ``"90m"``, ``"2w"``, ``"3600s"`` as seconds; ``"never"`` (or
    nothing) as None. 422 ``invalid_expiry`` otherwise, or outside 60 s .. 3650 days."""
    text = text.strip().lower()
    if text in ("", "never", "none"):
        return None
    m = _DURATION_RE.match(text)
    if m is None:
        raise Unprocessable(
            f"expiry {text[:32]!r} is not a duration like 30d, 12h, 90m, 2w or 'never'",
            code="invalid_expiry",
        )
    return check_expiry_s(int(m.group(1)) * _UNIT_S[m.group(2)])


def check_note(note: str) -> str:
    note = note.strip()
    if len(note) > MAX_NOTE_CHARS:
        raise Unprocessable(f"a note has at most {MAX_NOTE_CHARS} characters", code="invalid_note")
    if _has_control_chars(note):
        raise Unprocessable("a note cannot hold control characters", code="invalid_note")
    return note


def new_api_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


# ----------------------------------------------------------------------------- authentication


def is_operator_token(token: str, *, bootstrap_token: str) -> bool:
    """Whether a bearer token is an operator's (the bootstrap token, or shaped like a
    personal token) rather than a host's: for endpoints both may call."""
    bootstrap = bool(bootstrap_token) and hmac.compare_digest(
        token.encode(), bootstrap_token.encode()
    )
    return bootstrap or token.startswith(TOKEN_PREFIX)


async def authenticate(
    session: AsyncSession, token: str, *, bootstrap_token: str, now: float
) -> Principal:
    """The principal of a bearer token: the bootstrap operator token, or an active personal
    token (401 ``invalid_token``, ``token_expired`` or ``token_revoked`` otherwise)."""
    if bootstrap_token and hmac.compare_digest(token.encode(), bootstrap_token.encode()):
        return Principal.bootstrap()
    if not token.startswith(TOKEN_PREFIX) or len(token) > MAX_TOKEN_CHARS:
        raise Unauthorized("invalid operator token", code="invalid_token")
    found = (
        await session.exec(
            select(ApiToken, Operator.username)
            .join(Operator, col(Operator.id) == ApiToken.operator_id)
            .where(ApiToken.token_hash == hash_token(token))
        )
    ).one_or_none()
    if found is None:
        raise Unauthorized("invalid operator token", code="invalid_token")
    row, username = found
    view = TokenView(token=row, operator=username)
    state = view.state(now)
    if state == "revoked":
        raise Unauthorized(f"token {row.id} was revoked", code="token_revoked")
    if state == "expired":
        raise Unauthorized(f"token {row.id} expired", code="token_expired")
    if row.last_used_at is None or now - row.last_used_at >= LAST_USED_RESOLUTION_S:
        await session.exec(
            update(ApiToken).where(col(ApiToken.id) == row.id).values(last_used_at=now)
        )
        await session.commit()
    return Principal(operator=username, scopes=frozenset(view.scopes), token_id=row.id)


# ----------------------------------------------------------------------------- management


def _has_control_chars(text: str) -> bool:
    return any(unicodedata.category(c).startswith("C") for c in text)


async def _operator(session: AsyncSession, username: str) -> Operator:
    op = None
    if not _has_control_chars(username):  # no user name has any (nor can a query hold NUL)
        op = (
            await session.exec(select(Operator).where(Operator.username == username))
        ).one_or_none()
    if op is None:
        raise NotFound(
            f"no operator {username[:64]!r} (make one with yadml-server operator create)",
            code="unknown_operator",
        )
    return op


async def create_token(
    session: AsyncSession,
    *,
    operator: str,
    scopes: Iterable[str],
    expires_in_s: float | None,
    note: str,
    actor: Principal,
    client_ip: str | None,
    now: float,
) -> tuple[str, TokenView]:
    """Make a token for ``operator``; returns the token (the only time it exists outside
    the caller) and its row. Records ``token.create`` in the same transaction; commits."""
    parsed = parse_scopes(scopes)
    expires_in_s = check_expiry_s(expires_in_s)
    note = check_note(note)
    owner = await _operator(session, operator)
    assert owner.id is not None
    token = new_api_token()
    row = ApiToken(
        operator_id=owner.id,
        token_hash=hash_token(token),
        scopes=sorted(s.value for s in parsed),
        note=note,
        created_at=now,
        expires_at=None if expires_in_s is None else now + expires_in_s,
    )
    session.add(row)
    await session.flush()
    audit.record(
        session,
        actor=actor,
        action=audit.Action.token_create,
        target=f"token:{row.id}",
        detail={"owner": owner.username, "scopes": row.scopes, "expires_at": row.expires_at},
        client_ip=client_ip,
        now=now,
    )
    await session.commit()
    return token, TokenView(token=row, operator=owner.username)


async def list_tokens(
    session: AsyncSession, *, operator: str | None = None, operator_id: int | None = None
) -> list[TokenView]:
    """Tokens (all, or one operator's by name or id), newest first."""
    query = select(ApiToken, Operator.username).join(
        Operator, col(Operator.id) == ApiToken.operator_id
    )
    if operator is not None:
        if _has_control_chars(operator):
            return []
        query = query.where(Operator.username == operator)
    if operator_id is not None:
        query = query.where(ApiToken.operator_id == operator_id)
    rows = (
        await session.exec(query.order_by(col(ApiToken.id).desc()).limit(MAX_LISTED_TOKENS))
    ).all()
    return [TokenView(token=t, operator=name) for t, name in rows]


async def revoke_token(
    session: AsyncSession,
    token_id: int,
    *,
    actor: Principal,
    client_ip: str | None,
    now: float,
    owner_id: int | None = None,
) -> TokenView:
    """Revoke a token (only ``owner_id``'s, when given: another's is 404 as if it did not
    exist). Revoking a revoked token changes nothing. Records ``token.revoke``; commits."""
    found = (
        await session.exec(
            select(ApiToken, Operator.username)
            .join(Operator, col(Operator.id) == ApiToken.operator_id)
            .where(ApiToken.id == token_id)
        )
    ).one_or_none()
    if found is None or (owner_id is not None and found[0].operator_id != owner_id):
        raise NotFound(f"no token {token_id}", code="unknown_token")
    row, username = found
    if row.revoked_at is None:
        row.revoked_at = now
        session.add(row)
        audit.record(
            session,
            actor=actor,
            action=audit.Action.token_revoke,
            target=f"token:{row.id}",
            detail={"owner": username},
            client_ip=client_ip,
            now=now,
        )
        await session.commit()
    return TokenView(token=row, operator=username)
