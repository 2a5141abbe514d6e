"""The audit log: every state-changing operator action, who did it, when and from where.

``record(session, ...)`` adds an ``AuditEvent`` to the caller's session without committing,
so it is written in the transaction of the action itself: a handler records before calling
a service that commits (cancel, ban, token revocation: the target is known), and the event
is dropped with the action when that fails. Where the target's id only exists once the
action is committed (a new job, an uploaded dataset), the handler records right after it,
in a second commit.

Who: the ``Principal`` (operator name, ``via`` api/web/cli, the personal token's id or the
web session's tag). From where: the client address as ``ratelimit.client_ip`` sees it
(``X-Forwarded-For`` only from trusted proxies). Events are only ever added; their ids
order them, newest first, and page the log (``before``).
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from work_server.db.models import AuditEvent
from work_server.job_spec import JobSpec
from work_server.services.principal import Principal

#: detail JSON is cut to this many characters (it names things; it never holds data)
MAX_DETAIL_CHARS = 2000
MAX_PAGE = 500
MAX_FIELD_CHARS = 200


class Action(enum.StrEnum):
    job_start = "job.start"
    job_cancel = "job.cancel"
    host_ban = "host.ban"
    host_unban = "host.unban"
    token_create = "token.create"  # noqa: S105 (an action's name)
    token_revoke = "token.revoke"  # noqa: S105 (an action's name)
    operator_create = "operator.create"
    operator_password = "operator.password"  # noqa: S105 (an action's name)
    dataset_upload = "dataset.upload"
    login_success = "login.success"
    login_failure = "login.failure"


def job_summary(spec: JobSpec) -> dict[str, Any]:
    """The detail of ``job.start``: what a job is, in a few words (the API and the pages)."""
    return {
        "dataset": spec.dataset,
        "model": spec.model,
        "shards": spec.shards,
        "rounds": spec.rounds,
        "merge": spec.merge.method,
    }


def _bounded_detail(detail: Mapping[str, Any] | None) -> dict[str, Any]:
    if not detail:
        return {}
    data = dict(detail)
    text = json.dumps(data, default=str, sort_keys=True)
    if len(text) <= MAX_DETAIL_CHARS:
        return dict(json.loads(text))  # plain JSON types only
    return {"truncated": text[:MAX_DETAIL_CHARS]}


def record(
    session: AsyncSession,
    *,
    actor: Principal,
    action: Action,
    target: str,
    detail: Mapping[str, Any] | None = None,
    client_ip: str | None,
    now: float,
) -> AuditEvent:
    """Add one event to ``session``; it is committed with the caller's transaction."""
    event = AuditEvent(
        at=now,
        operator=actor.operator[:MAX_FIELD_CHARS],
        via=actor.via,
        token_id=actor.token_id,
        session_tag=actor.session_tag,
        action=action.value,
        target=target[:MAX_FIELD_CHARS],
        detail=_bounded_detail(detail),
        client_ip=None if client_ip is None else client_ip[:MAX_FIELD_CHARS],
    )
    session.add(event)
    return event


@dataclass(frozen=True)
class AuditPage:
    """Events newest first; ``next_before`` is the ``before`` of the next (older) page,
    None on the last one."""

    events: list[AuditEvent]
    next_before: int | None


async def list_events(session: AsyncSession, *, limit: int, before: int | None) -> AuditPage:
    """Up to ``limit`` events with ids below ``before`` (all when None), newest first."""
    limit = max(1, min(limit, MAX_PAGE))
    query = select(AuditEvent)
    if before is not None:
        query = query.where(col(AuditEvent.id) < before)
    rows = list(
        (await session.exec(query.order_by(col(AuditEvent.id).desc()).limit(limit + 1))).all()
    )
    more = len(rows) > limit
    events = rows[:limit]
    return AuditPage(events=events, next_before=events[-1].id if more and events else None)
