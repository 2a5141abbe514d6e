"""How long a host with nothing to do waits before asking again (``retry_after_s``).

Idle polls ("any work?" -> "no") are what saturates a server first: the scale model
(``bench/scale_sim.py``) measured them at 98-99.7% of the server's CPU for every host count,
with one process saturating at ~1,000 hosts polling every 2 s. BOINC answers this with
client back-off; YADML's server tells each idle host when to come back, stretched with the
number of active hosts so the whole fleet's idle polling stays within a budget:

    retry_after = clamp(active_hosts / idle_polls_per_s, base, max)

Hosts with units in hand are unaffected: they report results and ask for more at once.
"""

from __future__ import annotations

from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from work_server.db.models import Host


class PollPacer:
    """The no-work retry interval. The active-host count is refreshed at most every
    ``refresh_s`` (one indexed count), so pacing costs nothing per request."""

    def __init__(
        self,
        *,
        base_s: float,
        max_s: float,
        idle_polls_per_s: float,
        active_window_s: float = 3600.0,
        refresh_s: float = 30.0,
    ) -> None:
        if idle_polls_per_s <= 0 or base_s <= 0 or max_s < base_s:
            raise ValueError("need idle_polls_per_s > 0 and 0 < base_s <= max_s")
        self.base_s = base_s
        self.max_s = max_s
        self.idle_polls_per_s = idle_polls_per_s
        self.active_window_s = active_window_s
        self.refresh_s = refresh_s
        self.active_hosts = 0
        self._counted_at = float("-inf")

    def interval_for(self, active_hosts: int) -> float:
        return min(self.max_s, max(self.base_s, active_hosts / self.idle_polls_per_s))

    async def interval(self, session: AsyncSession, now: float) -> float:
        if now - self._counted_at >= self.refresh_s:
            self.active_hosts = int(
                (
                    await session.exec(
                        select(func.count())
                        .select_from(Host)
                        .where(
                            col(Host.last_contact) >= now - self.active_window_s,
                            col(Host.banned).is_(False),
                        )
                    )
                ).one()
            )
            self._counted_at = now
        return self.interval_for(self.active_hosts)
