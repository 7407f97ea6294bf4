"""Approvals and audit: what they cost.

A three-party job (tests' tiny job: 40-60 rows each, 4 features, 2 epochs) with a consortium CA
and a loopback address per party. Prints:

- the time from starting three ``covault party`` processes (mutual TLS) to the last one's exit
  when one party has not approved (median of ``--repeats``), and the same for an approved run;
- the audit log's growth per job (bytes of each party's SQLite file, entries) over ``--jobs``
  approved runs (threads, ``run_local(transport="local", approvals=True)``);
- the time of ``covault audit verify`` of all three logs (each the others' witness) after them.

    python benchmarks/bench_governance.py [--repeats 3] [--jobs 20] [--out benchmarks/results/governance.txt]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from covault.cli import main as cli
from tests.helpers import HOSPITALS, deploy_job, run_parties, tiny_job


def _quiet_cli(args: list[str]) -> int:
    with open(os.devnull, "w") as null:
        done = subprocess.run([sys.executable, "-m", "covault", *args], stdout=null, stderr=null)
    return done.returncode


def _parties(path: Path) -> tuple[float, set[int]]:
    t0 = time.perf_counter()
    done = run_parties(path, {n: ["--quiet"] for n in HOSPITALS})
    return time.perf_counter() - t0, {code for _, _, code in done.values()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=20)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    from covault.jobs.approvals import approve, party_folder
    from covault.jobs.local import run_local
    from covault.jobs.spec import load_job

    lines = [f"# covault approvals and audit; {os.cpu_count()} cores, Python {sys.version.split()[0]}"]
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        path = tiny_job(d)
        deploy_job(path, list(HOSPITALS), lambda t: t.replace("[model]", "timeout = 30\n[model]"))
        job = load_job(path)
        folders = {n: party_folder(job, n) for n in HOSPITALS}
        for n in HOSPITALS[:2]:
            approve(job, n, folders[n])
        refused = [_parties(path) for _ in range(args.repeats)]
        assert all(codes == {2} for _, codes in refused), refused
        approve(job, HOSPITALS[2], folders[HOSPITALS[2]])
        ran = [_parties(path) for _ in range(args.repeats)]
        assert all(codes == {0} for _, codes in ran), ran
        lines.append(
            f"3 x covault party, {HOSPITALS[2]} has not approved: every party exits 2 after "
            f"{statistics.median(t for t, _ in refused):.2f} s (median of {args.repeats}; process start included)"
        )
        lines.append(
            f"3 x covault party, approved: {statistics.median(t for t, _ in ran):.2f} s (median of {args.repeats})"
        )
        logs = [folders[n].audit_path for n in HOSPITALS]
        size0 = [p.stat().st_size for p in logs]
        for _ in range(args.jobs):
            run_local(path, transport="local", progress=False, approvals=True)
        size1 = [p.stat().st_size for p in logs]
        from covault.governance.audit import AuditLog

        with AuditLog(logs[0], HOSPITALS[0], readonly=True) as log:
            entries = log.head()[0]
        growth = statistics.mean((b - a) / args.jobs for a, b in zip(size0, size1))
        lines.append(
            f"audit log per approved job: {growth / 1024:.1f} KiB per party (SQLite file growth over "
            f"{args.jobs} jobs), 7 entries and 4 countersigned heads kept; {entries} entries in all now"
        )
        t0 = time.perf_counter()
        code = _quiet_cli(["audit", "verify", "--governance", str(logs[0].parent)])
        seconds = time.perf_counter() - t0
        assert code == 0
        t0 = time.perf_counter()
        with open(os.devnull, "w") as null:
            sys.stdout, old = null, sys.stdout
            try:
                cli(["audit", "verify", "--governance", str(logs[0].parent)])
            finally:
                sys.stdout = old
        inproc = time.perf_counter() - t0
        lines.append(
            f"covault audit verify of the 3 logs ({3 * entries} entries, each log the others' witness): "
            f"{seconds:.2f} s as a command, {inproc:.3f} s of it verifying"
        )
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
