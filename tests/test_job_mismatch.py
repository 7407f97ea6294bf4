"""Parties started from job files that differ: every party fails at once, naming the keys that
differ (the session id carries a digest per key; covault.runtime.config_session_id)."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import replace

import pytest

from covault.jobs.spec import load_job
from covault.runtime import config_session_id
from tests.helpers import HOSPITALS, deploy_job, tiny_job

pytestmark = [pytest.mark.processes, pytest.mark.slow]

TIMEOUT = 20  # the consortium timeout: the error must come long before it


def test_job_keys_and_config_fields_each_have_a_digest(tmp_path):
    path = tiny_job(tmp_path)
    deploy_job(path, list(HOSPITALS), lambda t: t)
    job = load_job(path)
    parts = job.fingerprint_parts()
    assert {"task", "label", "seed", "data", "model.epochs", "model.learning_rate"} <= set(parts)
    other = replace(job, model={**job.model, "epochs": 3}, seed=9)
    differ = sorted(k for k, v in other.fingerprint_parts().items() if parts[k] != v)
    assert differ == ["model.epochs", "seed"]
    sid = config_session_id(job.config, parts)
    assert sid == config_session_id(job.config, dict(parts)) != config_session_id(job.config, "")
    assert len(sid) == 16 and {"protocol", "parties", f"parties.{HOSPITALS[0]}.address"} <= set(sid.manifest)
    assert all(len(d) == 8 for d in sid.manifest.values())


@pytest.mark.parametrize(("edit", "odd"), [("epochs = 3", 2), ("seed = 5", 0)])
def test_parties_with_different_job_files_fail_at_once_naming_the_key(tmp_path, edit, odd):
    """One party (the last or the first to connect) runs a job file where one key differs: all
    three `covault party` processes stop at once (not after the timeout), each naming the peer
    that differs from it and the key."""
    path = tiny_job(tmp_path)
    deploy_job(path, list(HOSPITALS), lambda t: t.replace("[model]", f"timeout = {TIMEOUT}\n[model]"))
    text = path.read_text()
    key, _ = edit.split(" = ")
    old = next(line for line in text.splitlines() if line.startswith(f"{key} = "))
    other = tmp_path / "job_other.toml"
    other.write_text(text.replace(old + "\n", edit + "\n"))
    files = {n: other if i == odd else path for i, n in enumerate(HOSPITALS)}
    t0 = time.monotonic()
    procs = {
        n: subprocess.Popen(
            [sys.executable, "-m", "covault", "party", str(f), "--as", n, "--quiet"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n, f in files.items()
    }
    out = {}
    try:
        for n, p in procs.items():
            _, err = p.communicate(timeout=TIMEOUT + 30)
            out[n] = (p.returncode, err, time.monotonic() - t0)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    name = "model.epochs" if key == "epochs" else key
    for n, (code, err, seconds) in out.items():
        peers = [HOSPITALS[odd]] if n != HOSPITALS[odd] else [h for h in HOSPITALS if h != n]
        assert code == 1, err
        assert any(
            f"party '{peer}': session id mismatch: it runs another job or consortium config; " in err
            for peer in peers
        ), err
        assert f"keys that differ: {name}\n" in err, err
        assert seconds < TIMEOUT / 2, (n, seconds)
    print(f"'{edit}' at {HOSPITALS[odd]}: every party stopped within {max(o[2] for o in out.values()):.2f} s")
