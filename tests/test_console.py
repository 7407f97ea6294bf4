"""The operator's console (covault/console) through Starlette's test client, against real job
files, keys and audit logs: no page without the session, the token works once, every form needs
its CSRF token, loopback only, approve and reject change the party's status and its signed
files, names and reasons are escaped, a tampered log shows as BAD."""

from __future__ import annotations

import re
import shutil
import signal
import sqlite3
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("starlette", reason="the console extra (pip install 'covault[console]') is not installed")

from starlette.testclient import TestClient

from covault.cli import main as cli
from covault.console.app import create_app
from covault.console.auth import ConsoleError, Gate, check_loopback
from covault.console.party import PartyView
from covault.governance.approval import load_approval
from covault.governance.errors import ApprovalError
from covault.jobs.approvals import known_jobs, party_folder
from covault.jobs.local import run_local
from covault.jobs.spec import load_job
from tests.helpers import HOSPITALS, approve_all, deploy_job, tiny_job

A = HOSPITALS[0]
BASE = "http://127.0.0.1:8765"
PAGES = ["/jobs", "/jobs/job.toml", "/runs", "/audit", "/identity", "/console.css"]
POSTS = ["/jobs/job.toml/approve", "/jobs/job.toml/reject", "/jobs/job.toml/run"]


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    """A three-party job with its consortium certificates (issued once for the module)."""
    d = tmp_path_factory.mktemp("console")
    deploy_job(tiny_job(d), list(HOSPITALS), lambda t: t)
    return d


@pytest.fixture
def jobs(deployed, tmp_path):
    """A fresh copy of the deployed folder (no approvals, no audit log yet)."""
    d = tmp_path / "jobs"
    shutil.copytree(deployed, d)
    for f in (d / "certs").glob("*.audit.sqlite"):
        f.unlink()
    shutil.rmtree(d / "certs" / "approvals", ignore_errors=True)
    return d


@pytest.fixture
def console(jobs):
    gate = Gate()
    with TestClient(create_app(PartyView(A, jobs), gate), base_url=BASE) as client:
        yield client, gate


def login(client, gate):
    r = client.get(f"/login?token={gate.token}")
    assert r.status_code == 200 and r.url.path == "/jobs"
    return r


def form(client, path="/jobs/job.toml"):
    """The CSRF token and fingerprint of a job page's forms."""
    html = client.get(path).text
    csrf = re.search(r'name="csrf" value="([^"]+)"', html).group(1)
    fp = re.search(r'name="fingerprint" value="([0-9a-f]+)"', html).group(1)
    return csrf, fp


def status(jobs, party=A):
    job = load_job(jobs / "job.toml")
    return next(
        (s.status for s in known_jobs(party_folder(job, party)) if s.fingerprint == job.fingerprint()), None
    )


def test_no_page_without_the_session(console):
    client, _ = console
    for page in PAGES:
        r = client.get(page)
        assert r.status_code == 401 and "open the URL that covault console printed" in r.text, page
    for page in POSTS:
        assert client.post(page, data={"csrf": "x"}).status_code == 401, page


def test_a_wrong_token_is_refused_and_the_token_works_once(console):
    client, gate = console
    token = gate.token
    r = client.get("/login?token=" + token[:-1] + ("A" if token[-1] != "A" else "B"))
    assert r.status_code == 401 and "covault_console" not in r.headers.get("set-cookie", "")
    assert client.get("/login").status_code == 401
    assert client.get("/login?token=\u00e9t\u00e9").status_code == 401  # not ASCII: refused, no error
    r = client.get(f"/login?token={token}", follow_redirects=False)
    cookie = r.headers["set-cookie"]
    assert r.status_code == 303 and "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
    for page in PAGES:
        assert client.get(page).status_code == 200, page
    assert client.get(f"/login?token={token}").url.path == "/jobs"  # opened again in the session
    other = TestClient(client.app, base_url=BASE)
    assert other.get(f"/login?token={token}").status_code == 401  # spent
    assert other.get("/jobs").status_code == 401


def test_the_token_opens_one_session_however_many_try_at_once():
    gate = Gate()
    token = gate.token
    with ThreadPoolExecutor(16) as pool:
        sids = list(pool.map(lambda _: gate.login(token), range(64)))
    assert sum(s is not None for s in sids) == 1 and len(gate.sessions) == 1
    assert token not in repr(gate)


def test_security_headers_and_loopback_host_only(console):
    client, gate = console
    r = login(client, gate)
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert "script-src" not in r.headers["content-security-policy"]  # default-src 'none': no scripts
    assert r.headers["referrer-policy"] == "no-referrer" and r.headers["cache-control"] == "no-store"
    assert client.get("/jobs", headers={"host": "evil.example:8765"}).status_code == 421  # DNS rebinding
    assert client.get("/jobs", headers={"host": "localhost:8765"}).status_code == 200


@pytest.mark.parametrize("host", ["127.0.0.1:80@evil.example", "localhost:evil", "localhost.", "[::1]x", ""])
def test_a_host_header_that_is_not_exactly_loopback_and_a_port_is_refused(console, host):
    client, gate = console
    login(client, gate)
    r = client.get("/jobs", headers={"host": host})
    assert r.status_code == 421 and "frame-ancestors 'none'" in r.headers["content-security-policy"]


def test_requests_from_other_sites_or_other_loopback_ports_are_refused(console, jobs):
    """A page of another web server on this host (another port: the same site, so the cookie
    goes with it) cannot make the browser approve, nor even open a page (Sec-Fetch-Site)."""
    client, gate = console
    login(client, gate)
    csrf, fp = form(client)
    for site in ("same-site", "cross-site"):
        r = client.get("/jobs", headers={"sec-fetch-site": site})
        assert r.status_code == 403 and "frame-ancestors 'none'" in r.headers["content-security-policy"]
        r = client.post(
            "/jobs/job.toml/approve", data={"csrf": csrf, "fingerprint": fp}, headers={"sec-fetch-site": site}
        )
        assert r.status_code == 403 and status(jobs) == "pending"
    for site in ("same-origin", "none"):  # its own pages; a URL typed or opened from the terminal
        assert client.get("/jobs", headers={"sec-fetch-site": site}).status_code == 200


def test_a_huge_form_is_refused_and_changes_nothing(console, jobs):
    client, gate = console
    login(client, gate)
    csrf, fp = form(client)
    r = client.post(
        "/jobs/job.toml/reject", data={"csrf": csrf, "fingerprint": fp, "reason": "x" * (2 << 20)}
    )
    assert r.status_code == 413 and "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert "Traceback" not in r.text
    assert status(jobs) == "pending"
    assert client.get("/jobs").status_code == 200  # the console goes on


def test_an_unexpected_error_shows_no_traceback_and_keeps_the_headers(jobs):
    class Broken(PartyView):
        def runs(self):
            raise RuntimeError(f"secret detail {self.jobs}")

    gate = Gate()
    app = create_app(Broken(A, jobs), gate)
    with TestClient(app, base_url=BASE, raise_server_exceptions=False) as client:
        login(client, gate)
        r = client.get("/runs")
    assert r.status_code == 500 and "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert "secret detail" not in r.text and "Traceback" not in r.text and "RuntimeError" not in r.text


@pytest.mark.parametrize("path", POSTS)
def test_a_form_without_its_csrf_token_is_refused(console, jobs, path):
    client, gate = console
    login(client, gate)
    csrf, fp = form(client)
    for data in (
        {"fingerprint": fp},
        {"fingerprint": fp, "csrf": csrf[:-2]},
        {"fingerprint": fp, "csrf": ""},
    ):
        r = client.post(path, data=data)
        assert r.status_code == 403 and "CSRF" in r.text, (path, data)
    assert status(jobs) == "pending"  # shown, so proposed; never decided
    assert not (jobs / "certs" / "runs").exists()


def test_approve_in_the_page_signs_the_approval(console, jobs):
    client, gate = console
    login(client, gate)
    page = client.get("/jobs").text
    assert 'class="status pending">pending' in page
    csrf, fp = form(client)
    assert fp == load_job(jobs / "job.toml").fingerprint()
    r = client.post("/jobs/job.toml/approve", data={"csrf": csrf, "fingerprint": fp})
    assert r.status_code == 200 and 'id="status" class="status approved">approved' in r.text
    assert 'id="run"' in r.text  # approved: the Run button is offered
    assert status(jobs) == "approved"
    a = load_approval(jobs / "certs", fp, A)
    assert a is not None and a.approved and a.party == A
    assert 'class="status approved">approved' in client.get("/jobs").text


def test_reject_with_a_reason_is_signed_and_escaped(console, jobs):
    client, gate = console
    login(client, gate)
    csrf, fp = form(client)
    reason = "<script>alert('reason')</script> not this quarter"
    r = client.post("/jobs/job.toml/reject", data={"csrf": csrf, "fingerprint": fp, "reason": reason})
    assert r.status_code == 200 and 'class="status rejected">rejected' in r.text
    assert "&lt;script&gt;alert(&#39;reason&#39;)&lt;/script&gt; not this quarter" in r.text
    assert "<script>" not in r.text and 'id="run"' not in r.text
    a = load_approval(jobs / "certs", fp, A)
    assert a is not None and not a.approved and a.reason == reason
    audit = client.get("/audit").text
    assert "<script>" not in audit and "&lt;script&gt;" in audit and 'id="verified"' in audit


def test_a_job_changed_after_it_was_shown_is_not_approved(console, jobs):
    client, gate = console
    login(client, gate)
    csrf, fp = form(client)
    path = jobs / "job.toml"
    path.write_text(path.read_text().replace("epochs = 2", "epochs = 3"))
    r = client.post("/jobs/job.toml/approve", data={"csrf": csrf, "fingerprint": fp})
    assert r.status_code == 409 and "The job file changed since this page was shown" in r.text
    assert load_approval(jobs / "certs", fp, A) is None
    assert load_approval(jobs / "certs", load_job(path).fingerprint(), A) is None


def test_a_job_its_policy_refuses_cannot_be_approved(jobs):
    """The data owner's local file names its data and a policy that allows another task: the
    plan says REFUSED, Approve is disabled, and a forced POST signs nothing."""
    (jobs / "a.policy.toml").write_text('allowed_tasks = ["linear_regression"]\n')
    local = jobs / "a.local.toml"  # no task: not listed as a job
    local.write_text('data = "hospital_a.csv"\npolicy = "a.policy.toml"\n')
    gate = Gate()
    with TestClient(create_app(PartyView(A, jobs, local=local), gate), base_url=BASE) as client:
        login(client, gate)
        assert "a.local.toml" not in client.get("/jobs").text
        page = client.get("/jobs/job.toml").text
        assert (
            "REFUSED: policy of hospital_a" in page and '<button type="submit" id="approve" disabled>' in page
        )
        csrf, fp = form(client)
        r = client.post("/jobs/job.toml/approve", data={"csrf": csrf, "fingerprint": fp})
        assert r.status_code == 409 and "RefusedError" in r.text and "rule allowed_tasks" in r.text
    assert load_approval(jobs / "certs", fp, A) is None


def test_a_job_name_with_markup_is_escaped(console, jobs):
    client, gate = console
    login(client, gate)
    name = "x<script>alert(1)"
    shutil.copy(jobs / "job.toml", jobs / f"{name}.toml")
    page = client.get("/jobs").text
    assert "x&lt;script&gt;alert(1)" in page and "<script>" not in page
    r = client.get("/jobs/x%3Cscript%3Ealert(1).toml")
    assert r.status_code == 200 and 'id="job-name">x&lt;script&gt;alert(1)</span>' in r.text
    assert "<script>" not in r.text
    assert client.get("/jobs/..%2Fjob.toml").status_code == 404  # only files the listing shows


def test_the_runs_pages_show_a_failed_and_a_finished_run(console, jobs):
    """Two real runs of every party (threads): without hospital_c's approval (every party fails,
    naming it), then approved by all (finished): the pages show what the audit log records."""
    client, gate = console
    login(client, gate)
    assert "has run no job yet" in client.get("/runs").text
    approve_all(jobs / "job.toml", HOSPITALS[:2])
    with pytest.raises(ApprovalError):
        run_local(jobs / "job.toml", transport="local", progress=False, approvals=True)
    fp = load_job(jobs / "job.toml").fingerprint()
    runs = client.get("/runs").text
    assert 'class="status failed">failed' in runs and "party &#39;hospital_c&#39; has not approved" in runs
    page = client.get(f"/runs/{fp}").text
    assert 'id="status" class="status failed">failed' in page and "has not approved this job" in page
    approve_all(jobs / "job.toml", HOSPITALS[2:])
    run_local(jobs / "job.toml", transport="local", progress=False, approvals=True)
    assert 'class="status finished">finished' in client.get("/runs").text
    page = client.get(f"/runs/{fp}").text
    assert 'id="status" class="status finished">finished' in page
    traffic = re.search(r'<table id="traffic">.*?</table>', page, re.S).group(0)
    assert all(f"<td>{n}</td>" in traffic for n in HOSPITALS[1:]) and A not in traffic
    assert (
        "the model&#39;s weights" in page
        and "approvals of hospital_a, hospital_b, hospital_c checked" in page
    )
    assert client.get("/runs/" + "0" * 64).status_code == 404
    verified = re.search(r'id="verified">([^<]*)', client.get("/audit").text).group(1)
    assert verified.startswith("Verified:") and "countersigned by hospital_b, hospital_c" in verified


def test_identity_shows_the_certificate_and_warns_before_expiry(console):
    client, gate = console
    login(client, gate)
    page = client.get("/identity").text
    assert f"<dd>CN={A}</dd>" in page and "CN=covault consortium CA" in page
    assert 'id="expiry-warning"' in page and "expires in under 30 days" in page  # issued for 2 days


def test_a_missing_key_is_named_on_the_page(console, jobs):
    client, gate = console
    login(client, gate)
    (jobs / "certs" / f"{A}.key").unlink()
    assert client.get("/jobs").status_code == 200
    r = client.get("/jobs/job.toml")
    assert r.status_code == 409 and "CertificateError" in r.text and f"party &#39;{A}&#39;" in r.text
    assert "CertificateError" in client.get("/identity").text


def test_the_audit_page_names_the_first_bad_entry(console, jobs):
    client, gate = console
    login(client, gate)
    csrf, fp = form(client)
    client.post("/jobs/job.toml/approve", data={"csrf": csrf, "fingerprint": fp})
    assert "Verified: 2 entries" in client.get("/audit").text
    db = sqlite3.connect(jobs / "certs" / f"{A}.audit.sqlite")
    with db:  # what a party rewriting its history would do: drop the append-only trigger, edit
        db.execute("DROP TRIGGER entries_no_update")
        db.execute("UPDATE entries SET payload = replace(payload, 'approved', 'APPROVED') WHERE seq = 2")
    db.close()
    page = client.get("/audit").text
    assert re.search(r'id="verified">BAD at entry <a href="#entry-2">2</a>', page), page


def test_only_the_loopback_interface(capsys, jobs):
    for host in ("127.0.0.1", "localhost", "::1"):
        assert check_loopback(host) == host
    for host in ("0.0.0.0", "192.168.1.10", "example.org", "::"):
        with pytest.raises(ConsoleError, match="loopback interface only"):
            check_loopback(host)
    code = cli(["console", "--as", A, "--jobs", str(jobs), "--host", "0.0.0.0", "--port", "0"])
    err = capsys.readouterr().err
    assert code == 2 and "serves on the loopback interface only" in err and "SSH port forwarding" in err


def parties_of(jobs) -> list[str]:
    """The command lines of running ``covault party`` processes of the job in ``jobs``."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"party" in cmd and str(jobs / "job.toml").encode() in cmd:
            found.append(" ".join(c.decode() for c in cmd))
    return found


@pytest.mark.processes
def test_the_command_serves_the_token_url_and_stops_on_sigint(jobs):
    """covault console as a process: the printed URL logs in over real HTTP; Ctrl-C stops it and
    the run it started."""
    import httpx2 as httpx  # the HTTP client starlette's test client uses (requirements-dev.txt)

    proc = subprocess.Popen(
        [sys.executable, "-m", "covault", "console", "--as", A, "--jobs", str(jobs), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = [proc.stdout.readline(), proc.stdout.readline()]
        assert lines[0].startswith(f"covault console: party {A}, jobs in {jobs}"), lines
        url = re.search(r"open (http://127\.0\.0\.1:(\d+)/login\?token=[\w-]+)$", lines[1].strip()).group(1)
        with httpx.Client(base_url=url.split("/login")[0]) as http:
            assert http.get("/jobs").status_code == 401
            r = http.get(url, follow_redirects=True)
            assert r.status_code == 200 and "job.toml" in r.text and 'class="status pending"' in r.text
            assert http.get(url).status_code == 303  # in the session: back to the jobs
            csrf, fp = form(http)
            assert (
                http.post("/jobs/job.toml/approve", data={"csrf": csrf, "fingerprint": fp}).status_code == 303
            )
            r = http.post("/jobs/job.toml/run", data={"csrf": csrf, "fingerprint": fp}, follow_redirects=True)
            assert "Started covault party" in r.text and "(running here)" in r.text  # its peers never come
        assert parties_of(jobs)  # covault party hospital_a, waiting for its peers
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 130
        assert proc.stderr.read().strip().endswith("covault console: stopped")
        assert not parties_of(jobs)  # stopped with the console
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
