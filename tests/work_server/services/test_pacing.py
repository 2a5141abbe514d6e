"""Idle-poll pacing: the no-work wait grows with the active hosts, within [base, max]."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from work_server.db.engine import create_schema, make_engine, make_sessionmaker, sqlite_url
from work_server.db.models import Host
from work_server.services.pacing import PollPacer


def test_interval_is_hosts_over_budget_clamped() -> None:
    pacer = PollPacer(base_s=2.0, max_s=600.0, idle_polls_per_s=100.0)
    assert pacer.interval_for(0) == 2.0
    assert pacer.interval_for(150) == 2.0  # 1.5 s < base
    assert pacer.interval_for(1_000) == 10.0
    assert pacer.interval_for(100_000) == 600.0  # capped


@pytest.mark.parametrize(
    "kwargs",
    [
        {"base_s": 2.0, "max_s": 1.0, "idle_polls_per_s": 1.0},
        {"base_s": 2.0, "max_s": 10.0, "idle_polls_per_s": 0.0},
        {"base_s": 0.0, "max_s": 10.0, "idle_polls_per_s": 1.0},
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="need idle_polls_per_s > 0 and 0 < base_s <= max_s"):
        PollPacer(**kwargs)


def test_counts_active_unbanned_hosts_and_refreshes_rarely(tmp_path: Path) -> None:
    async def scenario() -> list[float]:
        engine = make_engine(sqlite_url(tmp_path))
        await create_schema(engine)
        sessions = make_sessionmaker(engine)
        now = time.time()
        pacer = PollPacer(base_s=1.0, max_s=100.0, idle_polls_per_s=2.0, refresh_s=30.0)

        def host(i: int, last: float, banned: bool = False) -> Host:
            return Host(
                name=f"h{i}",
                os="linux",
                arch="x86_64",
                cpus=1,
                memory_mb=1024,
                runtimes=["process"],
                token_hash=f"{i:064x}",
                created_at=now,
                last_contact=last,
                banned=banned,
            )

        try:
            async with sessions() as s:
                s.add_all(host(i, now - 10) for i in range(10))  # active
                s.add_all(host(100 + i, now - 7200) for i in range(5))  # gone quiet
                s.add(host(200, now, banned=True))
                await s.commit()
                first = await pacer.interval(s, now)  # 10 active / 2 per s
                s.add_all(host(300 + i, now) for i in range(10))
                await s.commit()
                cached = await pacer.interval(s, now + 5)  # not recounted yet
                later = await pacer.interval(s, now + 31)  # 20 active
            return [first, cached, later]
        finally:
            await engine.dispose()

    assert asyncio.run(scenario()) == [5.0, 5.0, 10.0]
