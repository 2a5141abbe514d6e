"""The pages with a logged-in operator: dashboard, jobs (start, refusal, cancel, downloads),
hosts (ban), server status, and the live fragments."""

from __future__ import annotations

import re
import time
from typing import Any

from sqlmodel import select

from tests.work_server.web.conftest import Client, page_csrf
from work_server import keys
from work_server.db.models import DaemonRun, Host, Job, JobState, Round
from work_server.job_info import JobInfo


async def post_form(client: Client, path: str, data: dict[str, Any], **kw: Any) -> Any:
    token = await page_csrf(client)
    return await client.post(path, data={"csrf_token": token, **data}, allow_redirects=False, **kw)


JOB_FORM = {"dataset": "digits", "shards": "2", "rounds": "2", "runtimes": "process"}


async def test_dashboard_without_a_job(logged_in: Client) -> None:
    r = await logged_in.get("/dashboard")
    html = await r.text()
    assert "No job yet" in html
    assert 'data-live-url="/dashboard/live"' in html
    assert "Signed in as <strong>alice</strong>" in html


async def test_start_a_job_from_the_form_and_refuse_a_second(logged_in: Client) -> None:
    client = logged_in
    r = await post_form(client, "/jobs", {**JOB_FORM, "lr": "0.002", "merge_method": "median"})
    assert r.status == 303, await r.text()
    assert r.headers["Location"] == "/jobs/1"
    assert client.app is not None
    async with client.app[keys.SESSIONMAKER]() as session:
        [job] = (await session.exec(select(Job))).all()
    assert job.spec["dataset"] == "digits"
    assert job.spec["rounds"] == 2
    assert job.spec["lr"] == 0.002
    assert job.spec["merge"]["method"] == "median"
    assert job.spec["runtimes"] == ["process"]

    r = await post_form(client, "/jobs", JOB_FORM)
    assert r.status == 409
    html = await r.text()
    assert "already running" in html
    assert 'id="form-errors"' in html
    async with client.app[keys.SESSIONMAKER]() as session:
        assert len((await session.exec(select(Job))).all()) == 1

    page = await (await client.get("/jobs/1")).text()
    assert "Round 0 of 2" in page
    assert "pending" in page
    listing = await (await client.get("/jobs")).text()
    assert 'href="/jobs/1"' in listing


async def test_bad_form_values_are_explained(logged_in: Client) -> None:
    r = await post_form(logged_in, "/jobs", {**JOB_FORM, "rounds": "0", "lr": "abc"})
    assert r.status == 422
    html = await r.text()
    assert "Rounds (global epochs)" in html
    assert "Learning rate" in html
    # the operator's values are kept in the form
    assert re.search(r'name="lr" type="number" step="any" value="abc"', html)


async def test_every_job_option_is_on_the_form(logged_in: Client) -> None:
    html = await (await logged_in.get("/jobs")).text()
    for name in (
        "dataset", "model", "split_method", "merge_method", "rounds", "local_epochs", "lr",
        "batch_size", "rep_min_quorum", "rep_target_nresults", "rep_max_total_results",
        "rep_delay_bound_s", "runtimes", "shards",
    ):  # fmt: skip
        assert f'name="{name}"' in html, name
    # every input has a label
    for m in re.finditer(r'<(?:input|select) id="([^"]+)"', html):
        assert f'for="{m.group(1)}"' in html, m.group(1)


async def _fake_progress(client: Client, job_id: int, rounds: int, *, done: bool) -> None:
    """Write what the round closer would: evaluated rounds and the confusion matrix."""
    assert client.app is not None
    now = time.time()
    async with client.app[keys.SESSIONMAKER]() as session:
        job = await session.get(Job, job_id)
        assert job is not None
        for n in range(1, rounds + 1):
            session.add(
                Round(
                    job_id=job_id,
                    number=n,
                    state="done",
                    weights_sha256="0" * 64,
                    started_at=now - 10,
                    deadline=now + 100,
                    closed_at=now,
                    results_success=2,
                    metrics={
                        "accuracy": 0.5 + 0.2 * n,
                        "loss": 1.0 / n,
                        "precision_macro": 0.7,
                        "recall_macro": 0.7,
                        "f1_macro": 0.7,
                        "roc_auc_macro": 0.9,
                        "average_precision_macro": 0.8,
                    },
                )
            )
        job.current_round = rounds
        job.state = JobState.completed if done else JobState.running
        no_blob = "0" * 64
        job.info = JobInfo(
            shard_sha256=[no_blob],
            shard_sizes=[1],
            shard_bytes=[1],
            test_sha256=no_blob,
            num_train_samples=1,
            num_test_samples=1,
            weights_bytes=1,
            initial_weights_sha256=no_blob,
            confusion_matrix=[[5 if i == j else 1 for j in range(10)] for i in range(10)],
        ).to_json()
        if done:
            job.model_sha256 = client.app[keys.BLOBS].put(b"final model bytes")
        session.add(job)
        await session.commit()


async def test_dashboard_shows_progress_chart_metrics_and_heat_map(logged_in: Client) -> None:
    client = logged_in
    assert (await post_form(client, "/jobs", JOB_FORM)).status == 303
    await _fake_progress(client, 1, 2, done=False)
    for path in ("/dashboard", "/dashboard/live"):
        html = await (await client.get(path)).text()
        assert "Round 2 of 2" in html
        assert 'id="dash-accuracy-chart"' in html
        assert 'data-points="2"' in html
        assert html.count('class="point-accuracy"') == 2
        assert html.count('class="cell"') == 100
        assert 'id="latest-metrics"' in html
        assert "0.9000" in html
        assert "<title" in html
        assert "<desc" in html
    live = await (await client.get("/dashboard/live")).text()
    assert "<html" not in live  # a fragment, for live.js


async def test_completed_job_offers_model_and_report(logged_in: Client) -> None:
    client = logged_in
    assert (await post_form(client, "/jobs", JOB_FORM)).status == 303
    await _fake_progress(client, 1, 2, done=True)
    assert client.app is not None
    run_dir = client.app[keys.CONFIG].runs_dir / "1"
    run_dir.mkdir(parents=True)
    (run_dir / "report.json").write_text('{"job_id": 1}')
    html = await (await client.get("/jobs/1")).text()
    assert 'id="download-model"' in html
    assert "/jobs/1/report/report.json" in html
    assert 'id="cancel-job"' not in html
    r = await client.get("/jobs/1/model")
    assert r.status == 200
    assert await r.read() == b"final model bytes"
    assert "attachment" in r.headers["Content-Disposition"]
    r = await client.get("/jobs/1/report/report.json")
    assert r.status == 200
    assert (await r.read()) == b'{"job_id": 1}'
    r = await client.get("/jobs/1/report/secret.txt")
    assert r.status == 404
    assert "<html" in await r.text()


async def test_cancel_a_job(logged_in: Client) -> None:
    client = logged_in
    assert (await post_form(client, "/jobs", JOB_FORM)).status == 303
    r = await post_form(client, "/jobs/1/cancel", {})
    assert r.status == 303
    assert client.app is not None
    async with client.app[keys.SESSIONMAKER]() as session:
        job = await session.get(Job, 1)
        assert job is not None
        assert job.state == "cancelled"
    # cancelling again: a readable HTML refusal
    r = await post_form(client, "/jobs/1/cancel", {})
    assert r.status == 409
    assert "already cancelled" in await r.text()
    # and now a new job may start
    assert (await post_form(client, "/jobs", JOB_FORM)).status == 303


async def test_unknown_job_is_an_html_404(logged_in: Client) -> None:
    r = await logged_in.get("/jobs/99")
    assert r.status == 404
    assert "no job 99" in await r.text()


async def test_hosts_page_and_ban(logged_in: Client) -> None:
    client = logged_in
    assert client.app is not None
    async with client.app[keys.SESSIONMAKER]() as session:
        host = Host(
            name="<b>pc</b>",
            display_name="<i>Ada</i>",  # the API refuses markup; the page escapes it anyway
            os="linux",
            arch="x86_64",
            cpus=8,
            memory_mb=4096,
            runtimes=["process", "docker"],
            token_hash="1" * 64,
            created_at=time.time(),
            last_contact=time.time() - 120,
            results_valid=7,
            results_invalid=1,
            results_error=2,
            consecutive_valid=5,
            credit=12.5,
        )
        session.add(host)
        await session.commit()
        host_id = host.id
    html = await (await client.get("/hosts")).text()
    assert "&lt;b&gt;pc&lt;/b&gt;" in html
    assert "<b>pc</b>" not in html
    assert "public: &lt;i&gt;Ada&lt;/i&gt;" in html  # the operators see both names
    assert "process, docker" in html
    assert "12.5" in html
    assert "2 min ago" in html
    r = await post_form(
        client,
        f"/hosts/{host_id}/ban",
        {},
    )
    assert r.status == 303
    async with client.app[keys.SESSIONMAKER]() as session:
        h = await session.get(Host, host_id)
        assert h is not None
        assert h.banned
    html = await (await client.get(r.headers["Location"])).text()
    assert "banned" in html
    assert "Unban" in html
    r = await post_form(client, f"/hosts/{host_id}/unban", {})
    async with client.app[keys.SESSIONMAKER]() as session:
        h = await session.get(Host, host_id)
        assert h is not None
        assert not h.banned
    r = await post_form(client, "/hosts/999/ban", {})
    assert r.status == 404


async def test_server_status_page(client: Client) -> None:
    assert client.app is not None
    async with client.app[keys.SESSIONMAKER]() as session:
        session.add(DaemonRun(name="validator", last_run=time.time() - 5))
        await session.commit()
    client.app[keys.BLOBS].put(b"x" * 2048)
    html = await (await client.get("/server-status")).text()
    assert "Volunteers are anonymous unless they choose a public name" in html
    async with client.app[keys.SESSIONMAKER]() as session:
        for name, display_name, credit in (
            ("private-a", "<i>Ada</i>", 3.0),
            ("private-b", None, 9.0),
        ):
            session.add(
                Host(
                    name=name,
                    display_name=display_name,
                    os="linux",
                    arch="x86_64",
                    cpus=1,
                    memory_mb=1024,
                    runtimes=["process"],
                    token_hash=name,
                    created_at=time.time(),
                    last_contact=time.time(),
                    credit=credit,
                )
            )
        await session.commit()
    html = await (await client.get("/server-status")).text()
    assert 'id="top-volunteers"' in html
    assert "<td>&lt;i&gt;Ada&lt;/i&gt;</td><td>3.0</td>" in html
    assert "private-" not in html  # no chosen name: not listed
    assert "9.0" not in html
    for text in (
        "transitioner", "validator", "round closer", "work generator", "job finisher",
        "file deleter", "Tasks ready to send",
        "Tasks in progress", "waiting for validation", "Results received in the last hour",
        "Hosts active in the last 24 h", "Disk used by blobs",
    ):  # fmt: skip
        assert text in html, text
    assert "5 s ago" in html or "6 s ago" in html
    assert 'data-live-url="/server-status/live"' in html
    assert "Operator login" in html  # public, not logged in
