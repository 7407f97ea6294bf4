"""The operator's console: how long each page takes to serve.

A three-party job (tests' tiny job: 40-60 rows each, 4 features, 2 epochs) approved by every
party and run once with three ``covault party`` processes; then hospital_c's console (Starlette's
test client, in process: no network, no browser) serves each page ``--repeats`` times. Prints the
median time of a request per page and the page's size.

    python benchmarks/bench_console.py [--repeats 20]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from starlette.testclient import TestClient

from covault.console.app import create_app
from covault.console.auth import Gate
from covault.console.party import PartyView
from covault.jobs.spec import load_job
from tests.helpers import HOSPITALS, approve_all, deploy_job, run_parties, tiny_job


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        path = tiny_job(d)
        with contextlib.redirect_stdout(io.StringIO()):
            deploy_job(path, list(HOSPITALS), lambda t: t.replace("[model]", "timeout = 60\n[model]"))
            approve_all(path, HOSPITALS)
        done = run_parties(path, {n: ["--quiet"] for n in HOSPITALS})
        if any(code != 0 for _, _, code in done.values()):
            raise SystemExit(f"the job failed: {done}")
        gate = Gate()
        fp = load_job(path).fingerprint()
        with TestClient(create_app(PartyView(HOSPITALS[2], d), gate), base_url="http://127.0.0.1") as c:
            c.get(f"/login?token={gate.token}")
            print(f"console of {HOSPITALS[2]} after one finished run; median of {args.repeats} requests")
            for page in ["/jobs", "/jobs/job.toml", "/runs", f"/runs/{fp}", "/audit", "/identity"]:
                times = []
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    r = c.get(page)
                    times.append(time.perf_counter() - t0)
                    if r.status_code != 200:
                        raise SystemExit(f"{page}: HTTP {r.status_code}")
                shown = page if len(page) < 24 else page[:22] + "..."
                print(f"{shown:<26} {statistics.median(times) * 1000:7.1f} ms  {len(r.content):>7} bytes")


if __name__ == "__main__":
    main()
