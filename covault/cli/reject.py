"""``covault reject JOB.toml --as NAME [--reason TEXT]``: sign party NAME's rejection of this
version of the job."""

from __future__ import annotations

import argparse

from covault.cli.approve import decision_arguments
from covault.cli.common import run_job
from covault.exitcodes import EXIT_OK

ORDER = 60
HELP = "sign one party's rejection of a job"
DESCRIPTION = (
    "Sign party NAME's rejection of this version of JOB.toml (with --reason) and keep it in its "
    "governance folder and audit log; every party of a run of this version then stops, naming "
    "NAME and the reason (docs/governance.md)."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    decision_arguments(p)
    p.add_argument("--reason", metavar="TEXT", help="why (sent to the other parties with the rejection)")


def main(args: argparse.Namespace) -> int:
    prog = "covault reject"

    def body() -> int:
        from covault.cli.approve import load, report
        from covault.governance.approval import approval_path
        from covault.jobs.approvals import reject

        job, folder = load(args)
        decision = reject(job, args.name, folder, reason=args.reason)
        report(prog, decision, args, approval_path(folder.state, decision.fingerprint, args.name))
        return EXIT_OK

    return run_job(prog, body)
