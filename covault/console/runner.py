"""The console's Run button: ``covault party JOB --as NAME --json`` in a child process, its
stdout (the party's result, one JSON line) and stderr kept beside the party's audit log as
``runs/NAME.FINGERPRINT.out`` and ``.err``. At most one run per job version; the console stops
its runs when it stops (a party told to stop tells its peers)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from covault.governance.folder import PartyFolder


class RunError(Exception):
    """A run cannot start (already running, not approved, no such job)."""


def run_files(folder: PartyFolder, fingerprint: str) -> tuple[Path, Path]:
    """Where the run of ``fingerprint`` at ``folder.party`` keeps its stdout and stderr."""
    base = folder.state / "runs" / f"{folder.party}.{fingerprint[:16]}"
    return base.with_suffix(".out"), base.with_suffix(".err")


class Runner:
    """The ``covault party`` processes started by one console for party ``party``."""

    def __init__(self, party: str, *, local: Path | None = None, governance: Path | None = None):
        self.party = party
        self.local = local
        self.governance = governance
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, path: Path, folder: PartyFolder, fingerprint: str) -> subprocess.Popen:
        """Start this party's side of the job file ``path`` (version ``fingerprint``)."""
        if self.running(fingerprint):
            raise RunError(f"party {self.party!r} is already running job version {fingerprint[:16]}")
        cmd = [sys.executable, "-m", "covault", "party", str(path), "--as", self.party, "--json", "--quiet"]
        if self.local is not None:
            cmd += ["--local", str(self.local)]
        if self.governance is not None:
            cmd += ["--governance", str(self.governance)]
        out, err = run_files(folder, fingerprint)
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("wb") as o, err.open("wb") as e:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=o, stderr=e)  # noqa: S603
        self.procs[fingerprint] = proc
        return proc

    def running(self, fingerprint: str) -> bool:
        """Whether a run of ``fingerprint`` started here is still going."""
        proc = self.procs.get(fingerprint)
        return proc is not None and proc.poll() is None

    def stop(self, grace: float = 10.0) -> None:
        """Terminate the runs still going (kill after ``grace`` seconds)."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def run_output(folder: PartyFolder, fingerprint: str) -> dict[str, Any] | None:
    """What a run started by a console left: ``result`` (the party's JSON result, None if it
    printed none) and ``stderr``; None if no console ran this version."""
    out, err = run_files(folder, fingerprint)
    if not out.is_file():
        return None
    result = None
    lines = out.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    if lines:
        try:
            result = json.loads(lines[-1])
        except ValueError:
            result = None
    stderr = err.read_text(encoding="utf-8", errors="replace") if err.is_file() else ""
    return {"result": result, "stderr": stderr[-4000:], "out": out}
