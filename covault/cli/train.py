"""``covault train JOB.toml``: every party of a job on this machine."""

from __future__ import annotations

import argparse
from pathlib import Path

from covault.cli.common import output_options, print_result, progress, run_job
from covault.cli.tracking import log_tracking, tracking_options
from covault.exitcodes import EXIT_OK

ORDER = 30
HELP = "run every party of a job on this machine and report the model's held-out metrics"
DESCRIPTION = (
    "Run every party of JOB.toml on this machine (one process per party over mutual TLS with "
    "throw-away certificates, or threads with --transport local); addresses and certificates in "
    "the file are ignored."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("job", type=Path, help="job TOML file (docs/jobs.md)")
    p.add_argument("--transport", choices=["tcp", "local"], default="tcp")
    p.add_argument(
        "--compare-plaintext",
        action="store_true",
        help="also train the same model centrally on the pooled plaintext rows",
    )
    p.add_argument("--report", type=Path, metavar="FILE", help="write an HTML report to FILE")
    p.add_argument(
        "--approvals",
        action="store_true",
        help="run under approvals and audit as covault party does: every party needs its signed "
        "approval (covault approve) and keeps its audit log in the job's [tls] certs folder",
    )
    output_options(p)
    tracking_options(p)


def main(args: argparse.Namespace) -> int:
    from covault.jobs.local import run_local

    def body() -> int:
        result = run_local(
            args.job,
            transport=args.transport,
            compare_plaintext=args.compare_plaintext,
            progress=progress(args),
            approvals=args.approvals,
        )
        print_result(result, args, "covault train")
        log_tracking(args, args.job, result, "covault train")
        return EXIT_OK

    return run_job("covault train", body)
