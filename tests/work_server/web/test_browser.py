"""The operator's pages in a real browser: headless Chromium (Debian's ``chromium``, driven by
``playwright`` through ``executable_path``) against a real server process and real volunteer
client processes (``tests/system/harness.py``).

Log in, start a digits job from the form, get refused a second one, watch the round counter,
chart and heat map update live (no reload) until the job completes, open the server status
and hosts pages, log out. Screenshots of every page go to ``test-artifacts/screenshots/``.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.requirements import require
from tests.system.harness import cluster

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parents[3] / "test-artifacts" / "screenshots"
USER = "operator"
PASSWORD = "browser-test password"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]


def shot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def create_operator(state_dir: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "work_server",
            "operator",
            "create",
            "--state-dir",
            str(state_dir),
            "--username",
            USER,
            "--password-stdin",
        ],
        input=f"{PASSWORD}\n".encode(),
        check=True,
        capture_output=True,
        timeout=60,
    )


def nav(page: Any, name: str) -> None:
    page.get_by_role("navigation", name="Main").get_by_role("link", name=name).click()


def fill_job_form(page: Any) -> None:
    page.get_by_label("Dataset", exact=True).select_option("digits")
    page.get_by_label("Shards (work units per round)", exact=True).fill("2")
    page.get_by_label("Rounds (global epochs)", exact=True).fill("2")
    page.get_by_label("Local epochs", exact=True).fill("1")
    page.get_by_label("Split method", exact=True).select_option("stratified")
    page.get_by_label("Merge method", exact=True).select_option("simple_average")


def test_operator_trains_from_the_browser(tmp_path: Path) -> None:
    require(CHROMIUM.is_file(), f"{CHROMIUM} missing (make browser: apt-get install chromium)")
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        require(False, "the playwright Python package is missing (pip install -e '.[dev]')")
        return

    with cluster(tmp_path, 2) as (server, clients), sync_playwright() as pw:
        create_operator(tmp_path / "var")
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1366, "height": 900})
            page = context.new_page()
            page.set_default_timeout(30_000)
            base = server.url

            # 1. an operator page sends us to the login form; a wrong password is refused
            page.goto(f"{base}/dashboard")
            expect(page).to_have_url(re.compile(r"/login\?next="))
            page.get_by_label("User name", exact=True).fill(USER)
            page.get_by_label("Password", exact=True).fill("not the password")
            page.get_by_role("button", name="Log in").click()
            expect(page.locator("#login-error")).to_contain_text("Wrong user name or password")
            page.get_by_label("Password", exact=True).fill(PASSWORD)
            shot(page, "login")
            page.get_by_role("button", name="Log in").click()
            expect(page).to_have_url(f"{base}/dashboard")
            expect(page.get_by_text("No job yet")).to_be_visible()
            [cookie] = [c for c in context.cookies() if c["name"] == "yadml_session"]
            assert cookie["httpOnly"]
            assert cookie["sameSite"] == "Strict"

            # 2. start a digits job from the form
            nav(page, "Jobs")
            fill_job_form(page)
            page.get_by_role("button", name="Start training").click()
            expect(page).to_have_url(re.compile(r"/jobs/1$"))
            expect(page.locator("#round-counter")).to_contain_text("of 2")

            # 3. a second job is refused while the first runs
            nav(page, "Jobs")
            fill_job_form(page)
            page.get_by_role("button", name="Start training").click()
            expect(page.locator("#form-errors")).to_contain_text("already running")
            expect(page.locator("#jobs tbody tr")).to_have_count(1)
            shot(page, "jobs-refused")

            # 4. the dashboard follows the job live: volunteers start only now
            nav(page, "Dashboard")
            expect(page.locator("#round-progress")).to_have_attribute("value", "0")
            page.evaluate("window.__sameDocument = 42")
            for c in clients:
                c.start()
            # a round or two may close between two polls (warm trainers make rounds short):
            # what counts is that the page moves on without a reload
            done = re.compile(r"^[12]$")
            expect(page.locator("#round-progress")).to_have_attribute(
                "value", done, timeout=240_000
            )
            expect(page.locator("#dash-accuracy-chart")).to_have_attribute("data-points", done)
            expect(page.locator("#job-state")).to_have_text("completed", timeout=240_000)
            expect(page.locator("#round-counter")).to_contain_text("Round 2 of 2")
            expect(page.locator("#dash-accuracy-chart")).to_have_attribute("data-points", "2")
            expect(page.locator("#dash-accuracy-chart circle.point-accuracy")).to_have_count(2)
            expect(page.locator("#dash-confusion-heatmap rect.cell")).to_have_count(100)
            expect(page.locator("#latest-metrics")).to_contain_text("ROC AUC")
            assert page.evaluate("window.__sameDocument") == 42, "the page was reloaded"
            assert page.locator("#dashboard-live").get_attribute("data-live-updated")
            shot(page, "dashboard")

            # the finished job offers its model and report
            page.locator("#dashboard-live").get_by_role("link", name="#1").click()
            expect(page.locator("#download-model")).to_be_visible()
            with page.expect_download() as download:
                page.locator("#download-model").click()
            assert download.value.suggested_filename == "job-1-model.safetensors"
            shot(page, "job")

            # 5. server status (public) and hosts
            nav(page, "Server status")
            expect(page.locator("#hosts-day")).to_have_text("2")
            expect(page.locator("#daemons")).to_contain_text("round closer")
            shot(page, "server-status")
            nav(page, "Hosts")
            expect(page.locator("#hosts tbody tr")).to_have_count(2)
            expect(page.locator("#hosts")).to_contain_text("volunteer-0")
            shot(page, "hosts")

            # 6. log out: operator pages need a login again
            page.get_by_role("button", name="Log out").click()
            expect(page).to_have_url(re.compile(r"/login\?logged_out=1"))
            page.goto(f"{base}/hosts")
            expect(page).to_have_url(re.compile(r"/login\?next="))
        finally:
            browser.close()
