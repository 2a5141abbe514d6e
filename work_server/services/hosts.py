"""Host registration, authentication, display names, heartbeats and bans.

A host's ``name`` is private (operators and the host itself); its ``display_name`` is the
public name its volunteer may choose at registration or later (``set_display_name``), and
the only name of it anyone else ever sees (``services.status``' top volunteers).

**Banning** a host revokes its work at once, in the transaction that sets ``Host.banned``:

* its ``in_progress`` results become ``over/client_error`` with ``error_reason =
  'host_banned'`` (the API may end results for the operator; nothing was computed, so the
  host's error counters stay);
* its successes not judged yet (``validate_state`` ``init``/``inconclusive``) become
  ``validate_error``/``invalid`` with the same reason and count as invalid
  (``services.credit.invalidate``): a banned host's output never becomes canonical. Results
  already judged ``valid`` stay (they agreed with a quorum, or were accepted as canonical);
* their work units get ``transition_time = now`` and ``wake`` is called after the commit (the
  API passes one that wakes the transitioner), so the transitioner creates replacements,
  which dispatch never gives back to this host (it holds a result of the unit), in one pass.

The banned host's next heartbeat answers "abort" for every unit it runs (the one request a
banned host is still answered, so it stops the revoked work); every other request gets 403
``host_banned``. A revoked result stays revoked: unbanning restores dispatch only, and an
upload of a revoked result gets 410 ``result_revoked`` (``services.uploads``).
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from work_server.auth import hash_token, new_token
from work_server.db.models import (
    Host,
    Outcome,
    Result,
    ServerState,
    ValidateState,
    WorkUnit,
    WorkUnitState,
)
from work_server.errors import Forbidden, NotFound, Unauthorized
from work_server.services import audit, credit
from work_server.services.principal import Principal
from yadml_common.wire import HeartbeatRequest, HostRegisterRequest


async def register_host(
    session: AsyncSession, body: HostRegisterRequest, now: float
) -> tuple[Host, str]:
    token = new_token()
    host = Host(
        name=body.name,
        display_name=body.display_name,
        os=body.os,
        arch=body.arch,
        cpus=body.cpus,
        memory_mb=body.memory_mb,
        runtimes=list(dict.fromkeys(body.runtimes)),
        token_hash=hash_token(token),
        created_at=now,
        last_contact=now,
    )
    session.add(host)
    await session.commit()
    await session.refresh(host)
    return host, token


async def set_display_name(session: AsyncSession, host: Host, display_name: str | None) -> Host:
    """Choose, change or (``None``) withdraw ``host``'s public display name. Commits."""
    host.display_name = display_name
    session.add(host)
    await session.commit()
    await session.refresh(host)
    return host


#: ``Host.last_contact`` is written at most this often per host: it feeds "active in the last
#: 5 minutes / hour / day" figures, and an UPDATE on every request was a fifth of a work
#: request's database time.
LAST_CONTACT_RESOLUTION_S = 30.0


async def authenticate_host(
    session: AsyncSession, token: str, now: float, *, allow_banned: bool = False
) -> Host:
    """The host owning ``token``; 401 for an unknown token, 403 for a banned host (unless
    ``allow_banned``: then it is returned as it is, and nothing about it is written)."""
    host = (
        await session.exec(select(Host).where(Host.token_hash == hash_token(token)))
    ).one_or_none()
    if host is None:
        raise Unauthorized("unknown host token")
    if host.banned:
        if allow_banned:
            return host
        raise Forbidden("this host is banned by the project", code="host_banned")
    if now - host.last_contact >= LAST_CONTACT_RESOLUTION_S:
        host.last_contact = now  # written with the request's commit
    return host


#: ``Result.error_reason`` of the results a ban revoked
BANNED = "host_banned"


async def set_banned(
    session: AsyncSession,
    host_id: int,
    banned: bool = True,
    *,
    now: float,
    wake: Callable[[], None] | None = None,
) -> Host:
    """Ban (revoking the host's work, see the module docstring) or unban a host. Commits;
    then calls ``wake`` when work units were handed to the transitioner."""
    host = await session.get(Host, host_id)
    if host is None:
        raise NotFound(f"no host {host_id}")
    await session.exec(update(Host).where(col(Host.id) == host_id).values(banned=banned))
    handed_over = await _revoke_work(session, host_id, now) if banned else 0
    await session.commit()
    await session.refresh(host)
    if handed_over and wake is not None:
        wake()
    return host


async def ban_host(
    session: AsyncSession,
    host_id: int,
    banned: bool,
    *,
    actor: Principal,
    client_ip: str | None,
    now: float,
    wake: Callable[[], None] | None = None,
) -> Host:
    """An operator's ban or unban (the API and the web pages): :func:`set_banned`, with the
    audit event committed in the same transaction."""
    audit.record(
        session,
        actor=actor,
        action=audit.Action.host_ban if banned else audit.Action.host_unban,
        target=f"host:{host_id}",
        client_ip=client_ip,
        now=now,
    )
    return await set_banned(session, host_id, banned, now=now, wake=wake)


async def _revoke_work(session: AsyncSession, host_id: int, now: float) -> int:
    """Revoke what a banned host holds (no commit); returns how many work units were handed
    to the transitioner."""
    detail = f"revoked: host {host_id} was banned by the project"
    running = (
        await session.exec(
            select(Result.id, Result.workunit_id).where(
                col(Result.host_id) == host_id,
                col(Result.server_state) == ServerState.in_progress,
            )
        )
    ).all()
    workunits: set[int] = set()
    for result_id, wu_id in running:
        ended = await session.exec(
            update(Result)
            .where(col(Result.id) == result_id, col(Result.server_state) == ServerState.in_progress)
            .values(
                server_state=ServerState.over,
                outcome=Outcome.client_error,
                error_reason=BANNED,
                error_detail=detail,
            )
            .execution_options(synchronize_session=False)
        )
        if ended.rowcount == 1:
            workunits.add(wu_id)
    unjudged = (ValidateState.init, ValidateState.inconclusive)
    pending = (
        await session.exec(
            select(Result.id, Result.workunit_id).where(
                col(Result.host_id) == host_id,
                col(Result.outcome) == Outcome.success,
                col(Result.validate_state).in_(unjudged),
            )
        )
    ).all()
    for result_id, wu_id in pending:
        if result_id is not None and await credit.invalidate(
            session, result_id, reason=BANNED, detail=detail, from_states=unjudged
        ):
            workunits.add(wu_id)
    if workunits:
        await session.exec(
            update(WorkUnit)
            .where(col(WorkUnit.id).in_(workunits))
            .values(transition_time=now)
            .execution_options(synchronize_session=False)
        )
    return len(workunits)


async def heartbeat(
    session: AsyncSession, host: Host, body: HeartbeatRequest, now: float
) -> list[int]:
    """Record progress; return the result ids the host should abort (no longer wanted):
    all of them for a banned host, whose work was revoked (nothing is recorded then)."""
    ids = [u.result_id for u in body.running]
    if host.banned:
        await session.commit()
        return list(dict.fromkeys(ids))
    if not ids:
        await session.commit()
        return []
    rows = (
        await session.exec(
            select(Result, WorkUnit)
            .join(WorkUnit, col(WorkUnit.id) == Result.workunit_id)
            .where(col(Result.id).in_(ids))
        )
    ).all()
    by_id = {r.id: (r, wu) for r, wu in rows}
    abort: list[int] = []
    for unit in body.running:
        found = by_id.get(unit.result_id)
        if found is None or found[0].host_id != host.id:
            abort.append(unit.result_id)
            continue
        result, wu = found
        if result.server_state == ServerState.in_progress:
            await session.exec(
                update(Result)
                .where(col(Result.id) == result.id)
                .values(fraction_done=unit.fraction_done)
            )
        elif result.outcome == Outcome.no_reply and wu.state == WorkUnitState.active:
            continue  # late, but still useful: let it finish
        elif result.outcome != Outcome.success:
            abort.append(unit.result_id)
    await session.commit()
    return abort
