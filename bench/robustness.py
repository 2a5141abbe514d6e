"""Robustness benchmark: real server and client processes under faults and attacks.

``.venv/bin/python -m bench.robustness [--only NAME,...] [--rounds 10] [--volunteers 10]``

Every scenario starts a fresh work server and ``--volunteers`` client processes (process
executor, ``--threads 1``) on loopback, exactly like ``make demo``, submits one job (MNIST,
LeNet, stratified split into one shard per volunteer, a seeded ``--train-subset`` of the
training set so that ten rounds fit this 2-core machine, 1 local epoch, Adam 0.001, batch 64,
full 10k test set) and waits for it. Scenarios:

* ``baseline``: no faults, ``simple_average`` (FedAvg);
* ``crash``: every unit crashes with probability 0.3 (client reports ``crash``);
* ``late``: every unit is uploaded after its deadline with probability 0.1;
* ``server_kill``: the server is SIGKILLed during round ``--kill-round`` and restarted;
* ``robust``: no attack, the robust configuration (below);
* ``<attack>_fedavg`` / ``<attack>_robust`` for ``signflip``, ``scale``, ``noise``,
  ``labelflip``, ``alie``: the last 20 % of the volunteers attack every unit
  (``volunteer_client.testing.attacks``), merged with ``simple_average`` / the robust configuration.

The **robust configuration** is adaptive replication (a host needs 3 consecutive valid
results to be trusted; trusted hosts get 10 % spot checks) + screening (updates with a
delta norm over 3x the round median are rejected) + ``multi_krum`` with ``f = 2``.

For each scenario the JSON (``--output``, rewritten after every scenario) holds the final and
per-round accuracy, the rounds completed, result counts (valid, invalid, client errors,
no reply, late but accepted, too late), per-host trust, wall time, and the accounting checks
(every work unit of every round has exactly one canonical result; the hosts' valid, invalid
and error counters equal the number of result rows with that verdict, so nothing was lost or
counted twice).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench import common
from work_server import launch

TOKEN = "robustness-bench-operator"
ATTACKS = ("signflip", "scale", "noise", "labelflip", "alie")
ROBUST_MERGE: dict[str, Any] = {"method": "multi_krum", "byzantine_f": 2, "screen_norm_ratio": 3.0}
ROBUST_REPLICATION: dict[str, Any] = {
    "adaptive": True,
    "trust_threshold": 3,
    "spot_check_rate": 0.1,
}


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    faults: str = ""
    attack: str = ""
    attack_fraction: float = 0.0
    robust: bool = False
    kill_server: bool = False


def scenarios() -> list[Scenario]:
    out = [
        Scenario("baseline", "no faults, simple_average"),
        Scenario("crash", "30% of units crash mid-training", faults="crash:0.3"),
        Scenario("server_kill", "server SIGKILLed mid-round and restarted", kill_server=True),
        Scenario("late", "10% of units arrive after the deadline", faults="late:0.1"),
    ]
    for attack in ATTACKS:
        for robust in (False, True):
            out.append(
                Scenario(
                    f"{attack}_{'robust' if robust else 'fedavg'}",
                    f"20% of hosts attack ({attack}), "
                    + ("robust configuration" if robust else "simple_average"),
                    attack=attack,
                    attack_fraction=0.2,
                    robust=robust,
                )
            )
    out.append(Scenario("robust", "no attack, robust configuration", robust=True))
    return out


# ----------------------------------------------------------------------------- processes


@dataclass
class Cluster:
    root: Path
    port: int = field(default_factory=launch.free_port)
    server: subprocess.Popen[bytes] | None = None
    clients: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start_server(self) -> None:
        env = {**os.environ, "YADML_OPERATOR_TOKEN": TOKEN, "PYTHONUNBUFFERED": "1"}
        cmd = launch.serve_command(
            port=self.port, state_dir=self.root / "var", runs_dir=self.root / "runs",
            extra=[
                "--interval-transitioner", "0.5", "--interval-validator", "0.5",
                "--interval-aggregator", "0.5", "--retry-after", "1",
            ],
        )  # fmt: skip
        self.server = launch.start_server(
            cmd, url=self.url, log_path=self.root / "server.log", env=env, timeout_s=120
        )

    def client_cmd(self, i: int, *args: str) -> list[str]:
        # the client's testing entry point: yadml-client plus --faults/--attack/--fault-seed
        state = self.root / "clients" / str(i)
        cmd = [sys.executable, "-m", "volunteer_client.testing", "--state-dir", str(state)]
        return [*cmd, *args]

    def start_clients(self, n: int, faults: str, attackers: set[int], attack: str) -> None:
        attach = [
            subprocess.Popen(
                self.client_cmd(i, "attach", self.url, "--name", f"volunteer-{i}"),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for i in range(1, n + 1)
        ]
        for p in attach:
            if p.wait(timeout=120) != 0:
                raise RuntimeError("a client failed to attach")
        for i in range(1, n + 1):
            extra = ["--fault-seed", str(i)]
            if faults:
                extra += ["--faults", faults]
            if i in attackers:
                extra += ["--attack", attack]
            run = ["run", "--threads", "1", "--heartbeat-s", "2", "--backoff-max-s", "2", *extra]
            self.clients.append(
                launch.spawn(
                    self.client_cmd(i, *run),
                    log_path=self.root / "clients" / str(i) / "client.log",
                )
            )

    def api(self, method: str, path: str, **kw: Any) -> Any:
        r = httpx.request(
            method,
            f"{self.url}/api/v1{path}",
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=30,
            **kw,
        )
        r.raise_for_status()
        return r.json()

    def stop(self) -> None:
        launch.stop_processes(self.clients, timeout_s=20)  # first: they still talk to it
        if self.server is not None:
            launch.stop_process(self.server, timeout_s=20)


# ----------------------------------------------------------------------------- one scenario


def job_spec(sc: Scenario, args: argparse.Namespace) -> dict[str, Any]:
    return {
        "dataset": "mnist",
        "shards": args.volunteers,
        "train_subset": args.train_subset,
        "split": {"method": "stratified"},
        "merge": ROBUST_MERGE if sc.robust else {"method": "simple_average"},
        "rounds": args.rounds,
        "local_epochs": 1,
        "seed": args.seed,
        "replication": {
            "delay_bound_s": args.delay_bound,
            "max_error_results": 10,
            "max_total_results": 12,
            **(ROBUST_REPLICATION if sc.robust else {}),
        },
    }


def db_stats(db: Path, attackers: set[int]) -> dict[str, Any]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:

        def q(sql: str) -> list[Any]:
            return con.execute(sql).fetchall()

        outcomes = dict(q("SELECT outcome, count(*) FROM result GROUP BY outcome"))
        states = dict(q("SELECT validate_state, count(*) FROM result GROUP BY validate_state"))
        late_ok = q("SELECT count(*) FROM result WHERE late = 1 AND outcome = 'success'")[0][0]
        host_sums = q(
            "SELECT coalesce(sum(results_valid),0), coalesce(sum(results_invalid),0), "
            "coalesce(sum(results_error),0) FROM host"
        )[0]
        trust_sums = q(
            "SELECT coalesce(sum(valid),0), coalesce(sum(invalid),0), coalesce(sum(error),0) "
            "FROM hostruntimetrust"
        )[0]
        valid_rows = states.get("valid", 0)
        invalid_rows = states.get("invalid", 0)
        error_rows = outcomes.get("client_error", 0) + outcomes.get("no_reply", 0)
        missing_canonical = q(
            "SELECT count(*) FROM workunit w JOIN round r ON r.id = w.round_id "
            "WHERE r.state = 'done' AND w.state = 'done' AND w.canonical_result_id IS NULL"
        )[0][0]
        wu_not_done = q(
            "SELECT count(*) FROM workunit w JOIN round r ON r.id = w.round_id "
            "WHERE r.state = 'done' AND w.state != 'done'"
        )[0][0]
        bad_canonical = q(
            "SELECT count(*) FROM workunit w JOIN result x ON x.id = w.canonical_result_id "
            "WHERE NOT (x.outcome = 'success' OR x.error_reason = 'screened')"
        )[0][0]
        screened = q("SELECT count(*) FROM result WHERE error_reason = 'screened'")[0][0]
        hosts = [
            {
                "name": name,
                "attacker": int(name.rsplit("-", 1)[1]) in attackers,
                "valid": valid,
                "invalid": invalid,
                "error": error,
                "consecutive_valid": cv,
                "daily_quota": quota,
            }
            for name, valid, invalid, error, cv, quota in q(
                "SELECT h.name, t.valid, t.invalid, t.error, t.consecutive_valid, t.daily_quota "
                "FROM hostruntimetrust t JOIN host h ON h.id = t.host_id ORDER BY h.id"
            )
        ]
    finally:
        con.close()
    return {
        "results": {
            "valid": valid_rows,
            "invalid": invalid_rows,
            "client_error": outcomes.get("client_error", 0),
            "no_reply": outcomes.get("no_reply", 0),
            "late_accepted": late_ok,
            "too_late": states.get("too_late", 0),
            "didnt_need": outcomes.get("didnt_need", 0),
            "screened": screened,
            "success": outcomes.get("success", 0),
        },
        "accounting": {
            "work_units_without_canonical": missing_canonical,
            "work_units_not_done_in_closed_rounds": wu_not_done,
            "canonical_not_success": bad_canonical,
            "host_counters": list(host_sums),
            "trust_counters": list(trust_sums),
            "result_rows_valid_invalid_error": [valid_rows, invalid_rows, error_rows],
            "ok": missing_canonical == 0
            and bad_canonical == 0
            and list(host_sums) == [valid_rows, invalid_rows, error_rows]
            and list(trust_sums) == [valid_rows, invalid_rows, error_rows],
        },
        "hosts": hosts,
    }


def run_scenario(sc: Scenario, args: argparse.Namespace) -> dict[str, Any]:
    root = Path(args.work_dir) / sc.name
    if root.exists():
        subprocess.run(["rm", "-rf", str(root)], check=True)
    (root / "clients").mkdir(parents=True)
    n_attackers = round(sc.attack_fraction * args.volunteers)
    attackers = set(range(args.volunteers - n_attackers + 1, args.volunteers + 1))
    cluster = Cluster(root)
    started = time.monotonic()
    job: dict[str, Any] = {}
    killed_at: float | None = None
    try:
        cluster.start_server()
        cluster.start_clients(args.volunteers, sc.faults, attackers, sc.attack)
        job_id = cluster.api("POST", "/jobs", json=job_spec(sc, args))["id"]
        submitted = time.monotonic()
        while time.monotonic() - submitted < args.timeout:
            try:
                job = cluster.api("GET", f"/jobs/{job_id}")
            except httpx.HTTPError:
                time.sleep(1)
                continue
            if job["state"] in ("completed", "failed", "cancelled"):
                break
            if sc.kill_server and killed_at is None and job["current_round"] >= args.kill_round:
                status = cluster.api("GET", "/status")
                if status["results_in_progress"] > 0:  # mid-round, with work in flight
                    assert cluster.server is not None
                    cluster.server.send_signal(signal.SIGKILL)
                    cluster.server.wait()
                    killed_at = time.monotonic() - submitted
                    time.sleep(2)
                    cluster.start_server()
            time.sleep(1)
        job_wall = time.monotonic() - submitted
    finally:
        cluster.stop()
    rounds = job.get("rounds", [])
    out: dict[str, Any] = {
        "description": sc.description,
        "faults": sc.faults,
        "attack": sc.attack,
        "attackers": sorted(attackers),
        "robust": sc.robust,
        "state": job.get("state", "unknown"),
        "error": job.get("error"),
        "rounds_completed": len(rounds),
        "final_accuracy": rounds[-1]["accuracy"] if rounds else None,
        "accuracy_per_round": [r["accuracy"] for r in rounds],
        "job_wall_s": round(job_wall, 1),
        "scenario_wall_s": round(time.monotonic() - started, 1),
        "server_killed_at_s": None if killed_at is None else round(killed_at, 1),
        "spec": job_spec(sc, args),
    }
    out.update(db_stats(root / "var" / "yadml.db", attackers))
    return out


def markdown_table(data: dict[str, Any]) -> str:
    """The table (docs/robustness.md) of every measured scenario."""
    base = data.get("scenarios", {}).get("baseline", {}).get("final_accuracy")
    lines = [
        "| scenario | final acc. | vs baseline | rounds | valid / invalid / client err. / "
        "no reply / late ok / too late | screened | attackers' invalid | accounting | "
        "job wall s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in data.get("scenarios", {}).items():
        if "results" not in r:
            lines.append(f"| {name} | {r.get('state')} | | | | | | | |")
            continue
        acc = r["final_accuracy"]
        res = r["results"]
        attackers = [h for h in r.get("hosts", []) if h["attacker"]]
        bad = (
            f"{sum(h['invalid'] for h in attackers)} (quota "
            f"{'/'.join(str(h['daily_quota']) for h in attackers)})"
            if attackers
            else "-"
        )
        delta = f"{(acc - base) * 100:+.2f} pt" if acc is not None and base is not None else ""
        lines.append(
            f"| {name} | {acc:.4f} | {delta} | {r['rounds_completed']} | "
            f"{res['valid']} / {res['invalid']} / {res['client_error']} / {res['no_reply']} / "
            f"{res['late_accepted']} / {res['too_late']} | {res['screened']} | {bad} | "
            f"{'ok' if r['accounting']['ok'] else 'MISMATCH'} | {r['job_wall_s']:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = common.bench_parser(__doc__, results="robustness")
    p.add_argument("--only", default="", help="comma-separated scenario names")
    p.add_argument(
        "--table", action="store_true", help="print the docs/robustness.md table of --output"
    )
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--volunteers", type=int, default=10)
    p.add_argument("--train-subset", type=int, default=10000)
    p.add_argument("--delay-bound", type=float, default=45.0)
    p.add_argument("--kill-round", type=int, default=4)
    common.add_seed(p)
    p.add_argument("--timeout", type=float, default=900.0, help="per scenario")
    p.add_argument("--work-dir", default=str(common.ROOT / "var" / "bench-robustness"))
    args = p.parse_args(argv)
    if args.table:
        print(markdown_table(json.loads(args.output.read_text())))
        return 0
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    chosen = [s for s in scenarios() if not only or s.name in only]
    out_path: Path = args.output
    data: dict[str, Any] = json.loads(out_path.read_text()) if out_path.exists() else {}
    data["config"] = {
        "dataset": "mnist",
        "model": "lenet",
        "volunteers": args.volunteers,
        "rounds": args.rounds,
        "train_subset": args.train_subset,
        "delay_bound_s": args.delay_bound,
        "robust_merge": ROBUST_MERGE,
        "robust_replication": ROBUST_REPLICATION,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, shared",
    }
    data.setdefault("scenarios", {})
    for sc in chosen:
        print(f"[{time.strftime('%H:%M:%S')}] {sc.name}: {sc.description}", flush=True)
        try:
            result = run_scenario(sc, args)
        except Exception as exc:  # record and go on with the next scenario
            result = {"description": sc.description, "state": "error", "error": repr(exc)}
        data["scenarios"][sc.name] = {**result, "measured_at": time.strftime("%Y-%m-%d %H:%M")}
        common.write_results(out_path, data)
        print(
            f"  -> {result.get('state')} acc={result.get('final_accuracy')} "
            f"rounds={result.get('rounds_completed')} wall={result.get('job_wall_s')}s "
            f"results={result.get('results')} accounting_ok="
            f"{result.get('accounting', {}).get('ok')}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
