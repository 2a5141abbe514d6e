"""Host registration, authentication and heartbeats."""

from __future__ import annotations

from sqlalchemy import update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from work_server.auth import hash_token, new_token
from work_server.db.models import Host, Outcome, Result, ServerState, WorkUnit, WorkUnitState
from work_server.errors import Forbidden, NotFound, Unauthorized
from yadml_common.wire import HeartbeatRequest, HostRegisterRequest


async def register_host(
    session: AsyncSession, body: HostRegisterRequest, now: float
) -> tuple[Host, str]:
    token = new_token()
    host = Host(
        name=body.name,
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


#: ``Host.last_contact`` is written at most this often per host: it feeds "active in the last
#: 5 minutes / hour / day" figures, and an UPDATE on every request was a fifth of a work
#: request's database time.
LAST_CONTACT_RESOLUTION_S = 30.0


async def authenticate_host(session: AsyncSession, token: str, now: float) -> Host:
    """The host owning ``token``; 401 for an unknown token, 403 for a banned host."""
    host = (
        await session.exec(select(Host).where(Host.token_hash == hash_token(token)))
    ).one_or_none()
    if host is None:
        raise Unauthorized("unknown host token")
    if host.banned:
        raise Forbidden("this host is banned by the project", code="host_banned")
    if now - host.last_contact >= LAST_CONTACT_RESOLUTION_S:
        host.last_contact = now  # written with the request's commit
    return host


async def set_banned(session: AsyncSession, host_id: int, banned: bool = True) -> Host:
    """Ban (or unban) a host. A banned host gets 403 ``host_banned`` on every request it
    authenticates (work, blobs, uploads, failure reports, heartbeats); the results it
    holds run out at their deadlines and are reissued to other hosts."""
    host = await session.get(Host, host_id)
    if host is None:
        raise NotFound(f"no host {host_id}")
    await session.exec(update(Host).where(col(Host.id) == host_id).values(banned=banned))
    await session.commit()
    await session.refresh(host)
    return host


async def heartbeat(
    session: AsyncSession, host: Host, body: HeartbeatRequest, now: float
) -> list[int]:
    """Record progress; return the result ids the host should abort (no longer wanted)."""
    ids = [u.result_id for u in body.running]
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
