"""``covault plan JOB.toml --as NAME [--local FILE] [--json]``: a dry run at one party."""

from __future__ import annotations

import argparse
from pathlib import Path

from covault.cli.common import run_job
from covault.exitcodes import EXIT_OK

ORDER = 40
HELP = "show what one party of a job would send and learn, and its policy's verdicts, without running it"
DESCRIPTION = (
    "A dry run of JOB.toml at party NAME: nothing is sent and no peer is contacted. For a data "
    "owner: each column's verdict under its policy, the transforms, the rows held out, what it "
    "would send to whom and what every party would learn. Exit status 0 when the party would "
    "take part, 2 when its policy refuses the job or its data has a problem."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("job", type=Path, help="job TOML file (docs/jobs.md)")
    p.add_argument("--as", dest="name", required=True, metavar="NAME", help="the party")
    p.add_argument(
        "--local", type=Path, metavar="FILE", help="this data owner's local file (data, test, policy)"
    )
    p.add_argument("--json", action="store_true", help="print the plan as one JSON object")


def main(args: argparse.Namespace) -> int:
    from covault.exitcodes import EXIT_USAGE
    from covault.jobs.plan import format_plan, plan
    from covault.jobs.spec import bind_local, load_job

    def body() -> int:
        job = load_job(args.job)
        if args.local is not None:
            job = bind_local(job, args.name, args.local)
        p = plan(job, args.name)
        if args.json:
            import json

            from covault.jobs.report import json_safe

            print(json.dumps(json_safe(p), allow_nan=False), flush=True)
        else:
            print(format_plan(p), flush=True)
        return EXIT_USAGE if p["refusals"] or p["errors"] else EXIT_OK

    return run_job("covault plan", body)
