"""Consortium runs with real processes: ``covault party`` / ``covault run``, failures, transcripts."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import covault
from covault.cli import main as cli
from covault.deploy.config import load_config
from covault.encoding import FixedPoint
from covault.runtime import config_session_id
from covault.transport.framing import HEADER, KIND_DATA, MAGIC, VERSION
from covault.transport.tcp import connect_mesh, open_listener
from covault.transport.tls import TlsIdentity
from covault.transport.transcript import read_transcript
from tests.helpers import free_ports, wait_parties

pytestmark = pytest.mark.processes

TIMEOUT = 3.0  # the consortium timeout of these tests (seconds)
WAIT = TIMEOUT + 20.0  # how long a test waits for a process before declaring it hung

RESULT_SCRIPT = """
import numpy as np

def main(session):
    a, b = session.compute_parties[:2]
    x = session.input(np.array([1.5, -2.0, 3.25]) if session.party == a else None, owner=a)
    y = session.input(np.array([2.0, 0.5, -1.0]) if session.party == b else None, owner=b)
    out = (x * y + x).reveal()
    return "dealer" if out is None else "result " + " ".join(f"{v:.4f}" for v in out)
"""
EXPECTED = np.array([1.5, -2.0, 3.25]) * np.array([2.0, 0.5, -1.0]) + np.array([1.5, -2.0, 3.25])


def consortium(tmp_path: Path, protocol: str = "rep3", names=("a", "b", "c"), *, dealer=None) -> Path:
    """Certificates (through the CLI) and a config with fresh loopback ports; returns the config path."""
    certs = tmp_path / "certs"
    if not (certs / "ca.pem").exists():
        assert cli(["certs", "init", str(certs), "--days", "2"]) == 0
    for n in names:
        if not (certs / f"{n}.pem").exists():
            assert cli(["certs", "issue", str(certs), n, "--days", "2"]) == 0
    lines = [f'protocol = "{protocol}"', f"timeout = {TIMEOUT}"]
    if dealer:
        lines.append(f'dealer = "{dealer}"')
    lines += ["[tls]", 'certs = "certs"']
    for n, port in zip(names, free_ports(len(names))):
        lines += [f"[parties.{n}]", f'address = "127.0.0.1:{port}"']
    path = tmp_path / f"{protocol}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def script(tmp_path: Path, text: str, name: str = "prog.py") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def covault_cmd(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "covault", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def party(config: Path, name: str, prog: Path, *extra: str, **kw) -> subprocess.Popen:
    return covault_cmd("party", str(config), "--as", name, str(prog), *extra, **kw)


def finish(procs: dict[str, subprocess.Popen]) -> dict[str, tuple[int, str, str]]:
    return {name: (code, o, e) for name, (o, e, code) in wait_parties(procs, WAIT).items()}


def gone(pid: int) -> bool:
    """No such process (psutil-free: signal 0 and /proc)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")  # a zombie no longer runs anything


def results(out: dict[str, tuple[int, str, str]]) -> dict[str, str]:
    for name, (code, o, e) in out.items():
        assert code == 0, f"party {name} failed with {code}:\n{e}"
    return {n: o.strip().splitlines()[-1] for n, (_, o, _) in out.items()}


# -- success ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("protocol", "dealer"), [("rep3", None), ("2pc", "c")])
def test_three_covault_party_processes_compute_over_mutual_tls(tmp_path, protocol, dealer):
    cfg = consortium(tmp_path, protocol, dealer=dealer)
    prog = script(tmp_path, RESULT_SCRIPT)
    procs = {n: party(cfg, n, prog) for n in "abc"}  # as three shells would
    res = results(finish(procs))
    compute = "abc" if dealer is None else "ab"
    for n in compute:
        got = np.array([float(v) for v in res[n].split()[1:]])
        np.testing.assert_allclose(got, EXPECTED, atol=1e-3)
    if dealer:
        assert res[dealer] == "dealer"


def test_covault_run_launcher_prefixes_output_records_transcripts_and_reports_failures(tmp_path):
    cfg = consortium(tmp_path, "2pc", dealer="c")
    prog = script(tmp_path, RESULT_SCRIPT)
    p = covault_cmd("run", str(cfg), str(prog), "--transcript", str(tmp_path / "tr"))
    o, e = p.communicate(timeout=WAIT)
    assert p.returncode == 0, e
    lines = sorted(o.splitlines())
    assert (
        lines[0].startswith("[a] result ") and lines[1].startswith("[b] result ") and lines[2] == "[c] dealer"
    )
    for n in "abc":
        header, messages = read_transcript(tmp_path / "tr" / f"{n}.transcript")
        assert header["party"] == n and header["tls"] is True and header["protocol"] == "2pc"
        assert sum(1 for _ in messages) > 0

    failing = script(
        tmp_path,
        RESULT_SCRIPT.replace(
            "    out =", "    if session.party == 'b':\n        raise ValueError('b gives up')\n    out ="
        ),
        "fail.py",
    )
    p = covault_cmd("run", str(cfg), str(failing))
    o, e = p.communicate(timeout=WAIT)
    assert p.returncode == 1
    assert "[b] covault party b: error: ValueError: b gives up" in e
    assert re.search(r"\[a\] covault party a: error: PeerError: party 'b': .*b gives up", e)
    assert "covault run: party 'b' failed (exit code 1)" in e


DATA_SCRIPT = """
import numpy as np

def main(session):
    a, (d,) = session.compute_parties[0], session.data_parties
    x = session.input(np.array([1.5, -2.0, 3.25]) if session.party == a else None, owner=a)
    y = session.input(np.array([2.0, 0.5, -1.0]) if session.party == d else None, owner=d)
    out = (x * y + x).reveal(to=d)
    shown = "none" if out is None else " ".join(f"{v:.4f}" for v in out)
    return f"{','.join(session.parties)} {shown}"
"""


def test_covault_run_starts_the_data_parties_of_the_config(tmp_path):
    # 'd' is neither a compute party nor the dealer: a data party, one more process
    cfg = consortium(tmp_path, "2pc", names=("a", "b", "c", "d"), dealer="c")
    p = covault_cmd("run", str(cfg), str(script(tmp_path, DATA_SCRIPT)))
    o, e = p.communicate(timeout=WAIT)
    assert p.returncode == 0, e
    lines = dict(line.split(" ", 1) for line in o.splitlines())
    assert sorted(lines) == ["[a]", "[b]", "[c]", "[d]"]
    for n, line in lines.items():
        order, shown = line.split(" ", 1)
        assert order == "a,b,c,d"  # compute parties, dealer, data parties
        if n == "[d]":
            np.testing.assert_allclose([float(v) for v in shown.split()], EXPECTED, atol=1e-3)
        else:
            assert shown == "none"


# -- failures -----------------------------------------------------------------------------------------
KILL_SCRIPT = """
import os, signal, time
from pathlib import Path
import numpy as np

def main(session):
    a = session.compute_parties[0]
    x = session.input(np.arange(1000.0) if session.party == a else None, owner=a)
    y = x * x
    if session.party == "c":
        Path(os.environ["KILL_STAMP"]).write_text(repr(time.time()))
        os.kill(os.getpid(), signal.SIGKILL)
    for _ in range(20):
        y = y * x
    return y.reveal()
"""


def test_party_killed_mid_computation_makes_every_other_party_fail_naming_it(tmp_path):
    cfg = consortium(tmp_path)
    prog = script(tmp_path, KILL_SCRIPT)
    stamp = tmp_path / "killed_at"
    env = dict(os.environ, KILL_STAMP=str(stamp))
    procs = {n: party(cfg, n, prog, env=env) for n in "abc"}
    exited = {}
    deadline = time.monotonic() + WAIT
    while len(exited) < 3 and time.monotonic() < deadline:
        for n, p in procs.items():
            if n not in exited and p.poll() is not None:
                exited[n] = time.time()
        time.sleep(0.01)
    out = finish(procs)
    assert out["c"][0] == -signal.SIGKILL
    killed_at = float(stamp.read_text())
    for n in "ab":
        code, _, err = out[n]
        assert code == 1, err
        assert re.search(
            r"PeerError: party 'c': connection (closed by the peer abruptly|reset by the peer)", err
        )
        print(f"party {n} stopped {exited[n] - killed_at:.3f} s after c was killed (timeout {TIMEOUT} s)")
    assert all(gone(p.pid) for p in procs.values())


def test_party_that_never_comes_up_is_named_after_the_connect_timeout(tmp_path):
    cfg = consortium(tmp_path)
    prog = script(tmp_path, RESULT_SCRIPT)
    t0 = time.monotonic()
    out = finish({n: party(cfg, n, prog) for n in "ab"})  # 'c' is never started
    elapsed = time.monotonic() - t0
    for n in "ab":
        code, _, err = out[n]
        assert code == 1
        assert "PeerError: party 'c': did not come up: could not connect to 127.0.0.1:" in err
        assert f"within {TIMEOUT:g} s" in err
    print(f"'c' reported missing after {elapsed:.2f} s (timeout {TIMEOUT} s)")


def impostor(cfg_path: Path, name: str, identity: TlsIdentity, timeout: float = TIMEOUT + 2, only=None):
    """Play party ``name`` of the config in this process (a thread); returns (thread, outcome, stop).

    With ``only``, connect to that one party only (and listen on a free port, not on ``name``'s).
    """
    cfg = load_config(cfg_path)
    addresses = {n: (p.host, p.port) for n, p in cfg.parties.items()}
    order = cfg.names if only is None else tuple(p for p in cfg.names if p in (name, only))
    listener = open_listener("127.0.0.1", cfg.parties[name].port if only is None else 0)
    outcome = {}

    def body():
        try:
            outcome["channels"] = connect_mesh(
                name, order, listener, addresses, config_session_id(cfg), timeout, tls=identity
            )
        except Exception as exc:
            outcome["error"] = exc

    def stop():
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread
        listener.close()

    t = threading.Thread(target=body)
    t.start()
    return t, outcome, stop


def test_peer_from_another_ca_is_refused_and_logged(tmp_path):
    cfg = consortium(tmp_path)
    other = tmp_path / "other"
    assert cli(["certs", "init", str(other)]) == 0
    assert cli(["certs", "issue", str(other), "c"]) == 0
    prog = script(tmp_path, RESULT_SCRIPT)
    t, outcome, stop = impostor(
        cfg, "c", TlsIdentity("c", other / "ca.pem", other / "c.pem", other / "c.key")
    )
    out = finish({n: party(cfg, n, prog) for n in "ab"})
    stop()
    t.join(WAIT)
    for n in "ab":
        code, _, err = out[n]
        assert code == 1
        assert (
            "PeerCertificateError: party 'c': TLS handshake failed: its certificate is not signed by" in err
        )
        assert f"covault party {n}: WARNING: party '{n}': connection to 'c' failed" in err  # logged
    assert "error" in outcome


def test_peer_presenting_another_partys_name_is_refused_and_logged(tmp_path):
    cfg = consortium(tmp_path)
    certs = tmp_path / "certs"
    prog = script(tmp_path, RESULT_SCRIPT)
    # 'a' is played by whoever holds c's (valid) certificate; it dials b and c
    stolen = TlsIdentity("a", certs / "ca.pem", certs / "c.pem", certs / "c.key")
    fakes = [impostor(cfg, "a", stolen, only=n) for n in "bc"]
    out = finish({n: party(cfg, n, prog) for n in "bc"})
    for t, outcome, stop in fakes:
        stop()
        t.join(WAIT)
        assert "its certificate names ['c'], not 'a'" in str(outcome["error"])
    for n in "bc":
        code, _, err = out[n]
        assert code == 1
        assert re.search(
            rf"WARNING: party '{n}' refused a connection from 127.0.0.1:\d+ claiming to be 'a': "
            r"its certificate names \['c'\], not 'a'",
            err,
        ), err
        assert "PeerError: party 'a': no acceptable connection from it within" in err


BAD = {  # kind: (frame given the connection's tag, expected error)
    "malformed": (lambda tag: HEADER.pack(b"JUNK", VERSION, KIND_DATA, 0, 0, 0, tag), "bad magic b'JUNK'"),
    "oversized": (
        lambda tag: HEADER.pack(MAGIC, VERSION, KIND_DATA, 1, 10, 5 << 30, tag),
        "exceeds the limit of 4294967296 bytes",
    ),
    "truncated": (lambda tag: HEADER.pack(MAGIC, VERSION, KIND_DATA, 1, 10, 8, tag)[:20], "truncated frame"),
}


@pytest.mark.parametrize("kind", list(BAD))
def test_bad_frame_from_a_peer_fails_that_connection_clearly(tmp_path, kind):
    cfg = consortium(tmp_path)
    certs = tmp_path / "certs"
    prog = script(tmp_path, RESULT_SCRIPT)
    proc = party(cfg, "a", prog)
    fakes = {n: impostor(cfg, n, TlsIdentity.from_dir(certs, n)) for n in "bc"}
    for t, _, _ in fakes.values():
        t.join(WAIT)
    channels = fakes["b"][1]["channels"]
    frame, expected = BAD[kind]
    try:
        ch = channels["a"]
        ch.send_buffers([frame(ch.tag)])
        if kind == "truncated":
            ch.close_write()
        out = finish({"a": proc})
    finally:
        for _, outcome, _ in fakes.values():
            for ch in outcome.get("channels", {}).values():
                ch.close()
    code, _, err = out["a"]
    assert code == 1
    assert "PeerError: party 'b': malformed frame: " in err and expected in err, err


CTRL_C_SCRIPT = """
import os, signal, time

def main(session):
    if session.party == "c":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a stubborn party: needs SIGKILL
    print("pid", os.getpid(), flush=True)
    time.sleep(60)
"""


def test_ctrl_c_at_the_launcher_stops_every_party(tmp_path):
    cfg = consortium(tmp_path)
    prog = script(tmp_path, CTRL_C_SCRIPT)
    launcher = covault_cmd("run", str(cfg), str(prog))
    pids = {}
    try:
        deadline = time.monotonic() + WAIT
        while len(pids) < 3 and time.monotonic() < deadline:
            line = launcher.stdout.readline()
            m = re.match(r"\[(\w)\] pid (\d+)", line)
            if m:
                pids[m.group(1)] = int(m.group(2))
        assert len(pids) == 3 and not any(gone(p) for p in pids.values())
        t0 = time.monotonic()
        launcher.send_signal(signal.SIGINT)
        _, err = launcher.communicate(timeout=WAIT)
        print(f"launcher stopped every party {time.monotonic() - t0:.2f} s after Ctrl-C")
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
    assert launcher.returncode == 130
    assert "covault run: interrupted: stopping every party" in err
    assert all(gone(p) for p in pids.values()), pids


def test_config_certificate_and_script_errors_exit_2_naming_the_problem(tmp_path):
    cfg = consortium(tmp_path)
    prog = script(tmp_path, RESULT_SCRIPT)
    (tmp_path / "certs" / "b.key").unlink()
    nomain = script(tmp_path, "x = 1\n", "nomain.py")
    cases = {
        ("b", prog): "party 'b': missing certificate file",
        ("zed", prog): "party 'zed' is not in",
        ("a", nomain): "defines no main(session) function",
        ("a", tmp_path / "absent.py"): "absent.py not found",
    }
    procs = {i: party(cfg, n, p) for i, (n, p) in enumerate(cases)}
    out = finish(procs)
    for i, expected in enumerate(cases.values()):
        code, _, err = out[i]
        assert code == 2 and expected in err, err


def test_malformed_pem_files_exit_2_with_one_line_naming_the_party_and_the_file(tmp_path):
    cfg = consortium(tmp_path)
    prog = script(tmp_path, RESULT_SCRIPT)
    certs = tmp_path / "certs"
    (certs / "a.pem").write_text("-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n")
    (certs / "b.key").write_text("not a key\n")
    out = finish({n: party(cfg, n, prog) for n in "ab"})
    expected = {
        "a": f"covault party a: error: CertificateError: party 'a': {certs / 'a.pem'} is not a valid PEM certificate: ",
        "b": f"covault party b: error: CertificateError: party 'b': {certs / 'b.key'} is not a valid PEM private key: "
        "no '-----BEGIN PRIVATE KEY-----' block",
    }
    for n, text in expected.items():
        code, _, err = out[n]
        assert code == 2 and err.startswith(text) and len(err.splitlines()) == 1, err
    (certs / "ca.key").write_text("garbage\n")
    p = covault_cmd("certs", "issue", str(certs), "d")
    _, err = p.communicate(timeout=WAIT)
    assert p.returncode == 2 and len(err.splitlines()) == 1, err
    assert err.startswith(
        f"covault certs issue: error: CertificateError: the consortium CA: {certs / 'ca.key'} is not a valid PEM "
        "private key"
    ), err


# -- transcripts ---------------------------------------------------------------------------------------
def _input_values(party: str, compute: tuple[str, ...]) -> np.ndarray:
    i = compute.index(party)
    return np.array([1234.5678 + i, -987.25 - i, 3.0625 + 10 * i, 77.125 * (i + 1)])


def audited_program(s):
    xs = [
        s.input(_input_values(p, s.compute_parties) if s.party == p else None, owner=p)
        for p in s.compute_parties
    ]
    total = xs[0] * xs[1]
    for x in xs[2:]:
        total = total + x
    return total.sum().reveal()


def leaky_program(s):
    """Every compute party sends its encoded input in the clear: the audit must catch this."""
    me = s.party
    sends = {}
    if me in s.compute_parties:
        sends = {q: [s.fxp.encode(_input_values(me, s.compute_parties))] for q in s.net.peers}
    s.net.exchange(sends, recv_from=[q for q in s.compute_parties if q != me])


def leaks(directory: Path, compute: tuple[str, ...]) -> list[tuple[str, str]]:
    """(owner, receiver) pairs where an encoded input of the owner appears in what the receiver got."""
    received: dict[str, list[bytes]] = {}
    for f in directory.glob("*.transcript"):
        _, messages = read_transcript(f)
        for m in messages:
            received.setdefault(m["to"], []).extend(a.tobytes() for a in m["arrays"])
    found = []
    for owner in compute:
        patterns = [v.tobytes() for v in FixedPoint().encode(_input_values(owner, compute))]
        for receiver, blobs in received.items():
            if receiver != owner and any(p in b for p in patterns for b in blobs):
                found.append((owner, receiver))
    return found


@pytest.mark.parametrize(("protocol", "n", "transport"), [("rep3", 3, "tcp"), ("2pc", 2, "local")])
def test_transcripts_show_no_party_input_to_any_other_party(tmp_path, protocol, n, transport):
    d = tmp_path / "tr"
    res = covault.run(audited_program, n, protocol, transport=transport, transcript_dir=d)
    compute = tuple(p for p in res if p != "dealer")
    values = [_input_values(p, compute) for p in compute]
    expected = (values[0] * values[1] + sum(values[2:])).sum()
    assert abs(res[compute[0]] - expected) < 1e-3 * abs(expected) + 1
    assert sorted(f.stem for f in d.glob("*.transcript")) == sorted(res)
    assert leaks(d, compute) == []
    # the audit can fail: a program that sends its input in the clear is caught
    leaked = tmp_path / "leaked"
    covault.run(leaky_program, n, protocol, transport="local", transcript_dir=leaked)
    assert sorted(leaks(leaked, compute)) == sorted((p, q) for p in compute for q in res if q != p)


def test_transcript_dir_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("COVAULT_TRANSCRIPT_DIR", str(tmp_path / "env"))
    covault.run(audited_program, 3, "rep3")
    assert sorted(f.stem for f in (tmp_path / "env").glob("*.transcript")) == ["p0", "p1", "p2"]


def test_transcripts_are_private_files_in_private_directories(tmp_path):
    d = tmp_path / "audit" / "run1"
    stale = tmp_path / "stale"
    stale.mkdir(mode=0o755)
    (stale / "p0.transcript").write_text("left by an earlier run\n")
    (stale / "p0.transcript").chmod(0o644)
    previous = os.umask(0o022)
    try:
        covault.run(audited_program, 3, "rep3", transcript_dir=d)
        covault.run(audited_program, 3, "rep3", transcript_dir=stale)
    finally:
        os.umask(previous)
    assert (d.parent.stat().st_mode & 0o777, d.stat().st_mode & 0o777) == (0o700, 0o700)
    assert stale.stat().st_mode & 0o777 == 0o755  # a directory covault did not create is left alone
    for f in [*d.glob("*.transcript"), *stale.glob("*.transcript")]:
        assert f.stat().st_mode & 0o777 == 0o600, f
    assert len(list(d.glob("*.transcript"))) == len(list(stale.glob("*.transcript"))) == 3
    header, _ = read_transcript(stale / "p0.transcript")
    assert header["party"] == "p0"
