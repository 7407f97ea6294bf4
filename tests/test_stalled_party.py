"""A stalled party is reported soon after the timeout, by name, by both launchers."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import time

import numpy as np
import pytest

import covault

pytestmark = [pytest.mark.processes, pytest.mark.slow]

TIMEOUT = 3.0
BOUND = TIMEOUT + 5.0  # a failure must be reported within this (generous: startup included)


def stalling_program(s):
    x = s.input(np.ones(3) if s.party == "p0" else None, owner="p0")
    if s.party == "p1":
        time.sleep(3600)  # stalls before its next message
    return (x * x).reveal()


@pytest.mark.parametrize(("protocol", "n"), [("rep3", 3), ("2pc", 2)])
def test_run_over_tcp_names_a_stalled_party_soon_after_the_timeout(protocol, n):
    t0 = time.monotonic()
    with pytest.raises(covault.PeerError) as info:
        covault.run(stalling_program, n, protocol, transport="tcp", timeout=TIMEOUT)
    elapsed = time.monotonic() - t0
    print(f"{protocol}: stalled party reported after {elapsed:.2f} s (timeout {TIMEOUT:g} s)")
    assert info.value.party == "p1"
    assert f"no message within {TIMEOUT:g} s" in str(info.value)
    assert any("party 'p1' was still running" in n for n in info.value.__notes__)
    assert elapsed < BOUND
    assert multiprocessing.active_children() == []


STALL_SCRIPT = """
import time
import numpy as np

def main(session):
    x = session.input(np.ones(3) if session.party == "a" else None, owner="a")
    if session.party == "b":
        time.sleep(3600)
    return (x * x).reveal()
"""


def test_covault_run_names_a_stalled_party_soon_after_the_timeout(tmp_path):
    # covault run uses throw-away certificates and loopback ports instead of these
    lines = [f"protocol = 'rep3'\ntimeout = {TIMEOUT}\n[tls]\ncerts = 'certs'"]
    lines += [f"[parties.{n}]\naddress = '127.0.0.1:{7000 + i}'" for i, n in enumerate("abc")]
    cfg = tmp_path / "rep3.toml"
    cfg.write_text("\n".join(lines) + "\n")
    prog = tmp_path / "stall.py"
    prog.write_text(STALL_SCRIPT)
    t0 = time.monotonic()
    p = subprocess.run(
        [sys.executable, "-m", "covault", "run", str(cfg), str(prog)],
        capture_output=True,
        text=True,
        timeout=BOUND + 30,
    )
    elapsed = time.monotonic() - t0
    print(f"covault run: stalled party reported after {elapsed:.2f} s (timeout {TIMEOUT:g} s)")
    assert p.returncode == 1, p.stderr
    assert "[a] covault party a: error: PeerError: party 'b': no message within 3 s" in p.stderr
    assert "covault run: party 'b' still running after the failure (stalled?): terminating" in p.stderr
    assert "covault run: party 'b' was still running: terminated" in p.stderr
    assert "Traceback" not in p.stderr
    assert elapsed < BOUND
