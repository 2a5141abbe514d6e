"""The discrete-event simulation: a heap of events on a simulated clock.

**Server model.** The server is one process (one CPU; SQLite has one writer). Every
explicit request and daemon pass runs the real code (:class:`scalesim.server.SimServer`) at
the server's clock ``now = max(event time, server free time)`` and keeps the server busy for
its measured CPU time, FIFO. So ``now`` only moves forward, whatever order the events came in.

**Idle polling and heartbeats as a fluid.** Hosts without work poll every ``retry_after_s``
(what ``ServerConfig.retry_after_s`` tells the real client) and hosts with a running unit
send a heartbeat every ``heartbeat_s``. While no result is unsent a poll changes nothing
(and a heartbeat only records progress), so instead of executing millions of identical ones
they form a background load ``rho = rate x (mean CPU of one)``, the mean taken from one real
poll and one real heartbeat every ``sample_interval_s`` (a sampled heartbeat's abort list is
obeyed); explicit work then takes ``cpu / (1 - rho)`` of server time (processor sharing).
While results are unsent every poll is explicit and real: idle hosts' polls arrive as a
Poisson stream of rate ``idle hosts / retry_after_s``, and a host that comes online or
finishes a unit asks at once, as the real client does.

**Daemons** run every ``daemon_interval_s`` and, as the server's ``DaemonScheduler`` does,
also right away when woken: an upload or a failure report wakes the transitioner, and a
pass that handled something wakes the daemons its ``DaemonSpec.wakes`` names.

**Hosts** (:mod:`scalesim.hosts`) ask for one unit at a time (the client's default
``--max-concurrent 1``), compute only while online (``setup_s + unit_gflop / speed``), then
report a client error (their error rate), sit on the result for 1-3 delay bounds (their late
rate) or upload it.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from bench.scalesim.hosts import HostModel, Population
from bench.scalesim.server import Claim, SimServer
from bench.scalesim.state import Counters, IndexedSet, Task
from work_server.daemons import (
    file_deleter,
    job_finisher,
    round_closer,
    transitioner,
    work_generator,
)
from work_server.daemons.roster import DAEMON_NAMES, ROSTER

T = TypeVar("T")
TOGGLE, POLL, ASK, FINISH, UPLOAD, DAEMON, SAMPLE = range(7)
#: whom a pass that handled something wakes (``DaemonSpec.wakes``)
WAKES = {spec.name: spec.wakes for spec in ROSTER}
#: the ``version`` field of a DAEMON event: a scheduled (interval) run or a woken one
SCHEDULED, WOKEN = 0, 1
#: the background load is capped here: beyond it the server is overloaded
RHO_CAP = 0.95


@dataclass(frozen=True, kw_only=True)
class SimConfig:
    hosts: int
    retry_after_s: float = 2.0
    heartbeat_s: float = 30.0
    daemon_interval_s: float = 10.0
    file_deleter_interval_s: float = 300.0
    #: one real idle poll and one real heartbeat this often: the fluid load's unit costs
    sample_interval_s: float = 60.0
    unit_gflop: float = 600.0  # ~5 min on the median host
    setup_s: float = 10.0  # download + start of one unit
    #: the server's ``DaemonScheduler(wake_pipeline=True)``: an upload or failure report
    #: wakes the transitioner, a daemon run that handled something wakes ``DaemonSpec.wakes``
    wake_pipeline: bool = True
    max_sim_s: float = 7 * 86400.0
    seed: int = 0
    model: HostModel = field(default_factory=HostModel)


class Engine:
    def __init__(self, cfg: SimConfig, server: SimServer, *, t0: float) -> None:
        self.cfg = cfg
        self.server = server
        self.t0 = t0
        self.t = t0
        self.server_free = t0
        self.last_now = t0
        self.rnd = random.Random(cfg.seed)
        self.pop = Population(cfg.hosts, cfg.model, np.random.default_rng(cfg.seed), t0=t0)
        self.idle = IndexedSet()
        self.tasks: dict[int, Task] = {}
        self.version = [0] * cfg.hosts
        self.computing = 0
        self.unsent = 0
        self.polling = False
        self.c = Counters()
        self.c_empty: list[float] = []
        self.c_heartbeat: list[float] = []
        self.job_state = "pending"
        self.woken: set[int] = set()
        self.heap: list[tuple[float, int, int, int, int]] = []
        self._seq = itertools.count()
        for h in range(cfg.hosts):
            if self.pop.online[h]:
                self.idle.add(h)
        self.heap = [
            (float(self.pop.next_toggle[h]), next(self._seq), TOGGLE, h, 0)
            for h in range(cfg.hosts)
        ]
        heapq.heapify(self.heap)

    # ------------------------------------------------------------------ clock and load

    def push(self, t: float, kind: int, host: int = -1, version: int = 0) -> None:
        heapq.heappush(self.heap, (t, next(self._seq), kind, host, version))

    def rates(self) -> tuple[float, float]:
        """Idle polls and heartbeats per second that run as background load now."""
        polls = 0.0 if self.unsent > 0 else len(self.idle) / self.cfg.retry_after_s
        return polls, self.computing / self.cfg.heartbeat_s

    def rho(self) -> float:
        polls, beats = self.rates()
        c_empty = _mean(self.c_empty)
        return polls * c_empty + beats * (_mean(self.c_heartbeat) or c_empty)

    def advance(self, t: float) -> None:
        if t < self.t:
            raise RuntimeError(f"simulated clock went backwards: {t} < {self.t}")
        dt = t - self.t
        if dt > 0:
            polls, beats = self.rates()
            c_empty = _mean(self.c_empty)
            c_hb = _mean(self.c_heartbeat) or c_empty
            self.c.virtual_polls += polls * dt
            self.c.virtual_heartbeats += beats * dt
            self.c.fluid_cpu["idle_polls"] += polls * c_empty * dt
            self.c.fluid_cpu["heartbeats"] += beats * c_hb * dt
            rho = polls * c_empty + beats * c_hb
            self.c.rho_time += min(rho, 1.0) * dt
            if rho >= RHO_CAP:
                self.c.overloaded_s += dt
        self.t = t

    async def serve(self, op: Callable[[float], Awaitable[tuple[T, float]]]) -> tuple[T, float]:
        """Run one real server operation; returns (its result, when its reply is out)."""
        now = max(self.t, self.server_free)
        if now < self.last_now:
            raise RuntimeError(f"server clock went backwards: {now} < {self.last_now}")
        self.last_now = now
        self.c.now_calls += 1
        out, cpu = await op(now)
        self.server_free = now + cpu / (1.0 - min(self.rho(), RHO_CAP))
        return out, self.server_free

    # ------------------------------------------------------------------ main loop

    async def run(self, job_id: int) -> None:
        self.c_empty.append(await self._calibrate())
        for i, spec in enumerate(ROSTER):  # the pipeline at once, housekeeping later
            first = 0.1 * (i + 1) if spec.pipeline else self.cfg.file_deleter_interval_s
            self.push(self.t0 + first, DAEMON, i)
        self.push(self.t0 + self.cfg.sample_interval_s / 2, SAMPLE)
        self.job_id = job_id
        end = self.t0 + self.cfg.max_sim_s
        while self.heap and self.job_state not in ("completed", "failed", "cancelled"):
            t, _, kind, host, version = heapq.heappop(self.heap)
            if t > end:
                break
            self.advance(t)
            self.c.events += 1
            await self.handle(kind, host, version)

    async def _calibrate(self) -> float:
        """CPU of empty work requests before the job has any work (the first estimate)."""
        cpus = []
        for _ in range(20):
            if not self.idle:
                break
            (_, cpu), _ = await self.serve(self._request_op(self.idle.choice(self.rnd)))
            cpus.append(cpu)
        return _mean(cpus) or 1e-3

    def _request_op(self, host: int) -> Callable[[float], Awaitable[tuple[Any, float]]]:
        async def op(now: float) -> tuple[tuple[list[Claim], float], float]:
            claims, cpu = await self.server.request_work(host, now, self.rnd.random)
            return (claims, cpu), cpu

        return op

    async def handle(self, kind: int, host: int, version: int) -> None:
        if kind == TOGGLE:
            await self.toggle(host)
        elif kind == POLL:
            self.polling = False
            if self.unsent > 0 and self.idle:
                h = self.idle.choice(self.rnd)
                self.idle.discard(h)
                await self.ask(h)
                self.start_polling()
        elif kind == ASK:
            if self.pop.online[host] and host not in self.tasks:
                self.idle.discard(host)
                await self.ask(host)
        elif kind == FINISH:
            if version == self.version[host]:
                await self.finish(host)
        elif kind == UPLOAD:
            await self.upload(host)
        elif kind == DAEMON:
            await self.daemon(host, woken=version == WOKEN)
        elif kind == SAMPLE:
            await self.sample()
            self.push(self.t + self.cfg.sample_interval_s, SAMPLE)

    def start_polling(self) -> None:
        if not self.polling and self.unsent > 0 and self.idle:
            self.polling = True
            rate = len(self.idle) / self.cfg.retry_after_s
            self.push(self.t + self.rnd.expovariate(rate), POLL)

    def become_free(self, host: int, at: float) -> None:
        self.tasks.pop(host, None)
        if self.pop.online[host]:
            if self.unsent > 0:
                self.push(at, ASK, host)
            else:
                self.idle.add(host)

    # ------------------------------------------------------------------ host events

    async def toggle(self, host: int) -> None:
        online = not self.pop.online[host]
        self.pop.online[host] = online
        self.push(self.t + self.pop.interval(online), TOGGLE, host)
        task = self.tasks.get(host)
        if not online:
            self.idle.discard(host)
            if task is not None and task.segment_start is not None:
                task.remaining_s -= max(0.0, self.t - task.segment_start)
                task.segment_start = None
                self.computing -= 1
                self.version[host] += 1
        elif task is not None:
            if not task.computed:
                self.resume(host, task, self.t)
        else:
            self.become_free(host, self.t)

    def resume(self, host: int, task: Task, at: float) -> None:
        task.segment_start = at
        self.computing += 1
        self.version[host] += 1
        self.push(at + max(0.0, task.remaining_s), FINISH, host, self.version[host])

    async def ask(self, host: int) -> None:
        (claims, cpu), done = await self.serve(self._request_op(host))
        if not claims:
            self.c.polls_empty += 1
            self.c_empty.append(cpu)
            if self.unsent > 0:
                self.unsent = await self.server.unsent()  # e.g. only replicas it holds
            self.tasks.pop(host, None)
            if self.pop.online[host]:
                self.idle.add(host)  # polls again with the others, never at once
            return
        self.c.claims += 1
        self.unsent = max(0, self.unsent - 1)
        claim = claims[0]
        m = self.cfg.model
        late = self.rnd.random() < m.late_rate
        task = Task(
            claim=claim,
            remaining_s=self.cfg.setup_s + self.cfg.unit_gflop / float(self.pop.speed_gflops[host]),
            fail=self.rnd.random() < float(self.pop.error_rate[host]),
            late_s=max(0.0, claim.deadline - done) * self.rnd.uniform(1.0, 3.0) if late else 0.0,
        )
        self.tasks[host] = task
        if self.pop.online[host]:
            self.resume(host, task, done)

    async def finish(self, host: int) -> None:
        task = self.tasks[host]
        task.computed = True
        task.segment_start = None
        self.computing -= 1
        if task.fail:
            claim = task.claim

            async def op(now: float) -> tuple[bool, float]:
                return await self.server.failure(host, claim, now)

            recorded, done = await self.serve(op)
            if recorded:
                self.c.failures += 1
                self.wake(transitioner.NAME)
            else:
                self.c.failures_gone += 1
            self.become_free(host, done)
        elif task.late_s > 0:
            self.push(self.t + task.late_s, UPLOAD, host)
        else:
            await self.upload(host)

    async def upload(self, host: int) -> None:
        task = self.tasks[host]
        claim = task.claim
        self.server.payload(claim)  # the volunteer's work: made before the request

        async def op(now: float) -> tuple[str, float]:
            return await self.server.upload(host, claim, now)

        outcome, done = await self.serve(op)
        self.c.uploads[outcome] += 1
        if outcome != "gone":
            self.wake(transitioner.NAME)
        self.become_free(host, done)

    # ------------------------------------------------------------------ server-side events

    def wake(self, *names: str) -> None:
        """Run these daemons now rather than at their next interval (one pending wake each),
        as ``DaemonScheduler.wake`` does."""
        if not self.cfg.wake_pipeline:
            return
        for name in names:
            index = DAEMON_NAMES.index(name)
            if index not in self.woken:
                self.woken.add(index)
                self.push(self.t, DAEMON, index, WOKEN)

    async def daemon(self, index: int, *, woken: bool) -> None:
        name = DAEMON_NAMES[index]
        if woken:
            self.woken.discard(index)

        async def op(now: float) -> tuple[int, float]:
            return await self.server.daemon(name, now, woken=woken)

        handled, _ = await self.serve(op)
        if handled:
            self.wake(*WAKES[name])
        if name in (transitioner.NAME, round_closer.NAME, work_generator.NAME):
            self.unsent = await self.server.unsent()
            self.start_polling()
        if name in (work_generator.NAME, job_finisher.NAME):
            self.job_state = await self.server.job_state(self.job_id)
        if not woken:
            interval = (
                self.cfg.file_deleter_interval_s
                if name == file_deleter.NAME
                else self.cfg.daemon_interval_s
            )
            self.push(self.t + interval, DAEMON, index, SCHEDULED)

    async def sample(self) -> None:
        """One real idle poll and one real heartbeat: the background load's unit costs."""
        if self.unsent == 0 and self.idle:
            h = self.idle.choice(self.rnd)
            self.idle.discard(h)
            await self.ask(h)
        running = [h for h in itertools.islice(self.tasks, 64) if not self.tasks[h].computed]
        if running:
            h = self.rnd.choice(running)
            claim = self.tasks[h].claim

            async def op(now: float) -> tuple[list[int], float]:
                return await self.server.heartbeat(h, claim, now)

            abort, _ = await self.serve(op)
            self.c_heartbeat.append(self.server.log.cpu["heartbeat"][-1])
            task = self.tasks.get(h)
            if claim.result_id in abort and task is not None and task.claim is claim:
                if task.segment_start is not None:
                    self.computing -= 1
                self.version[h] += 1
                self.c.aborted += 1
                self.become_free(h, self.t)


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0
