"""The console end to end in a real headless Chromium (Debian's chromium, driven by Playwright):
two parties approve a three-party job with covault approve --yes, the third approves it in its
console's page and presses Run; the other two start covault party; the page then shows the
finished run (bytes sent, what was revealed, the metrics) and a verified audit trail whose
heads the other two countersigned.

Chromium: $COVAULT_TEST_CHROMIUM (CI sets it: .ci/chromium.sh), else chromium on the PATH; the
test skips, saying so, only when neither exists (and fails when CI named a browser that is not there)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time

import pytest

from tests.helpers import HOSPITALS, approve_all, deploy_job, tiny_job

pytestmark = [pytest.mark.processes, pytest.mark.slow]

A, B, C = HOSPITALS
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run", "--disable-sync", "--disable-dev-shm-usage"]  # fmt: skip


def chromium() -> str:
    named = os.environ.get("COVAULT_TEST_CHROMIUM")
    if named:
        assert os.access(named, os.X_OK), f"COVAULT_TEST_CHROMIUM={named} is not an executable"
        return named
    found = shutil.which("chromium")
    if found is None:
        pytest.skip("no chromium browser (apt-get install chromium, or set COVAULT_TEST_CHROMIUM)")
    return found


def start_console(jobs) -> tuple[subprocess.Popen, str]:
    """``covault console --as C`` on a free port; the process and the login URL it printed."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "covault", "console", "--as", C, "--jobs", str(jobs), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    for line in proc.stdout:
        m = re.search(r"open (http://127\.0\.0\.1:\d+/login\?token=\S+)", line)
        if m:
            return proc, m.group(1)
    raise AssertionError(f"covault console printed no URL: {proc.stderr.read()}")


def test_approve_in_the_page_and_see_the_job_run(tmp_path):
    browser_path = chromium()
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    expect = sync_api.expect
    path = tiny_job(tmp_path)
    deploy_job(path, list(HOSPITALS), lambda t: t.replace("[model]", "timeout = 60\n[model]"))
    approve_all(path, [A, B])  # covault approve --yes, the CLI
    console, url = start_console(tmp_path)
    parties: list[subprocess.Popen] = []
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=browser_path, args=ARGS)
            page = browser.new_page()
            page.goto(url)  # the token, exchanged for the session cookie
            assert page.url.endswith("/jobs")
            row = page.locator("#jobs tr", has_text="job.toml")
            expect(row.locator(".status")).to_have_text("pending")
            row.get_by_role("link", name="job.toml").click()
            expect(page.locator("#plan")).to_contain_text("plan of party hospital_c")
            page.locator("#approve").click()
            expect(page.locator("#status")).to_have_text("approved")
            page.locator("#run").click()  # covault party hospital_c, started by the console
            expect(page.locator("#notice")).to_contain_text("Started covault party")
            cmd = [sys.executable, "-m", "covault", "party", str(path), "--quiet", "--as"]
            parties = [
                subprocess.Popen([*cmd, n], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for n in (A, B)
            ]
            for n, proc in zip((A, B), parties):
                out, err = proc.communicate(timeout=120)
                assert proc.returncode == 0, (n, err)
            deadline = time.monotonic() + 60
            while True:
                page.goto(url.split("/login")[0] + "/runs")
                status = page.locator("#runs tr", has_text="job").locator(".status")
                if status.count() and status.inner_text() == "finished":
                    break
                assert time.monotonic() < deadline, page.content()
                time.sleep(0.5)
            page.locator("#runs").get_by_role("link", name="job").click()
            expect(page.locator("#status")).to_have_text("finished")
            expect(page.locator("#traffic")).to_contain_text(A)
            expect(page.locator("#traffic")).to_contain_text(B)
            expect(page.locator("#revealed")).to_contain_text("the model's weights")
            expect(page.locator("#metrics")).to_contain_text("accuracy")  # the result the Run kept
            page.get_by_role("link", name="Audit").click()
            expect(page.locator("#verified")).to_contain_text(
                re.compile(f"^Verified: .* countersigned by {A}, {B}")
            )
            page.get_by_role("link", name="Identity").click()
            expect(page.locator("dd", has_text=f"CN={C}")).to_have_count(1)
            browser.close()
    finally:
        for proc in [*parties, console]:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(15)
