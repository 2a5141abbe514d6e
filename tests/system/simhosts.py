"""Simulated volunteers (httpx, no trainer) spreading their requests over several server
processes: each asks one server for work, downloads the inputs from the next, uploads to
the one after, round robin, so every step crosses processes. A result is the input weights
sent back with a training report: valid, and identical between replicas, which is what the
database and the blob directory must cope with when several processes accept them at once.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from safetensors.torch import load, save

from yadml_common.wire import REPORT_METADATA_KEY


@dataclass
class Tally:
    """What the simulated hosts saw: every result id handed out, and every accepted upload."""

    issued: list[int] = field(default_factory=list)
    accepted: list[int] = field(default_factory=list)
    duplicates: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    job_state: str = "unknown"

    @property
    def finished(self) -> bool:
        return self.job_state in ("completed", "failed", "cancelled")


def result_bytes(weights: bytes, samples: int = 8) -> bytes:
    report = {"train_loss": 0.5, "samples": samples, "elapsed_s": 0.01, "epochs": 1}
    tensors = load(weights)
    return bytes(save(tensors, metadata={REPORT_METADATA_KEY: json.dumps(report)}))


class Servers:
    """Live server URLs, round robin; ``alive`` says which may be asked (the test kills some)."""

    def __init__(self, urls: Sequence[str], alive: Callable[[str], bool]) -> None:
        self._urls = list(urls)
        self._alive = alive
        self._next = itertools.count()

    def pick(self) -> str:
        for _ in range(len(self._urls)):
            url = self._urls[next(self._next) % len(self._urls)]
            if self._alive(url):
                return url
        raise RuntimeError("no server alive")


def _on(server: str, url: str) -> str:
    """``url`` (absolute or relative) sent to ``server`` instead."""
    u = httpx.URL(url)
    return f"{server}{u.raw_path.decode()}"


async def _register(client: httpx.AsyncClient, servers: Servers, name: str) -> str:
    r = await client.post(f"{servers.pick()}/api/v1/hosts", json={"name": name})
    r.raise_for_status()
    return str(r.json()["host_token"])


async def _host(
    client: httpx.AsyncClient,
    servers: Servers,
    name: str,
    tally: Tally,
    stop_at: float,
) -> None:
    token = await _register(client, servers, name)
    auth = {"Authorization": f"Bearer {token}"}
    weights: dict[str, bytes] = {}
    while not tally.finished and time.monotonic() < stop_at:
        try:
            r = await client.post(
                f"{servers.pick()}/api/v1/work", json={"max_units": 2}, headers=auth
            )
            r.raise_for_status()
            body: dict[str, Any] = r.json()
            if not body["units"]:
                await asyncio.sleep(min(float(body["retry_after_s"]), 0.3))
                continue
            for unit in body["units"]:
                tally.issued.append(unit["result_id"])
                src = next(i for i in unit["inputs"] if i["name"] == "weights")
                if src["sha256"] not in weights:
                    b = await client.get(_on(servers.pick(), src["url"]), headers=auth)
                    b.raise_for_status()
                    weights[src["sha256"]] = b.content
                up = await client.put(
                    _on(servers.pick(), unit["upload"]["url"]),
                    content=result_bytes(weights[src["sha256"]]),
                    headers={**auth, "X-Upload-Grant": unit["upload"]["grant"]},
                )
                if up.status_code != 200:
                    tally.errors.append(f"upload {unit['result_id']}: {up.status_code} {up.text}")
                    continue
                dup = bool(up.json()["duplicate"])
                (tally.duplicates if dup else tally.accepted).append(unit["result_id"])
        except httpx.TransportError:
            await asyncio.sleep(0.1)  # a server was killed under us: ask another


async def _watch(
    client: httpx.AsyncClient,
    servers: Servers,
    job_id: int,
    operator_token: str,
    tally: Tally,
    stop_at: float,
) -> None:
    auth = {"Authorization": f"Bearer {operator_token}"}
    while not tally.finished and time.monotonic() < stop_at:
        try:
            r = await client.get(f"{servers.pick()}/api/v1/jobs/{job_id}", headers=auth)
            if r.status_code == 200:
                tally.job_state = str(r.json()["state"])
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.3)


async def run_hosts(
    urls: Sequence[str],
    n_hosts: int,
    *,
    job_id: int,
    operator_token: str,
    stop_after_s: float,
    alive: Callable[[str], bool] = lambda _: True,
) -> Tally:
    """``n_hosts`` simulated volunteers until job ``job_id`` is finished or ``stop_after_s``.

    A soft deadline rather than ``asyncio.timeout``: each host finishes the request it is in
    and the tally of what was issued and accepted comes back either way.
    """
    tally = Tally()
    servers = Servers(urls, alive)
    stop_at = time.monotonic() + stop_after_s
    async with httpx.AsyncClient(timeout=30) as client:
        await asyncio.gather(
            _watch(client, servers, job_id, operator_token, tally, stop_at),
            *(_host(client, servers, f"sim{i}", tally, stop_at) for i in range(n_hosts)),
        )
    return tally
