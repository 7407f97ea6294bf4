"""``covault approve JOB.toml --as NAME [--local FILE] [--yes]``: show what party NAME would
send and learn, ask, and sign its approval of this version of the job."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from covault.cli.common import run_job
from covault.exitcodes import EXIT_FAILED, EXIT_OK

ORDER = 50
HELP = "show a job's plan at one party, ask, and sign that party's approval"
DESCRIPTION = (
    "Print the plan of JOB.toml at party NAME (what it would send to whom and learn; a data "
    "owner's policy verdicts), its fingerprint and status, then ask; on yes (or --yes) sign the "
    "approval with the party's key and keep it in its governance folder (default: the folder of "
    "its key, [tls] certs). covault party runs a job only when every party approved the same "
    "fingerprint (docs/governance.md). Exit status 0 approved, 1 not approved at the prompt, 2 "
    "its policy refuses the job or a file is invalid."
)


def decision_arguments(p: argparse.ArgumentParser) -> None:
    """The options ``covault approve`` and ``covault reject`` share."""
    p.add_argument("job", type=Path, help="job TOML file (docs/jobs.md)")
    p.add_argument("--as", dest="name", required=True, metavar="NAME", help="the party deciding")
    p.add_argument(
        "--local",
        type=Path,
        metavar="FILE",
        help="this data owner's local file (data, test, policy, governance)",
    )
    p.add_argument(
        "--governance",
        type=Path,
        metavar="DIR",
        help="the party's governance folder (approvals, audit log; default: its local file's "
        "governance key, else the folder of its key)",
    )
    p.add_argument("--json", action="store_true", help="print the signed decision as one JSON object")


def add_arguments(p: argparse.ArgumentParser) -> None:
    decision_arguments(p)
    p.add_argument("--yes", action="store_true", help="approve without asking (scripts)")


def load(args: argparse.Namespace):
    """The job (bound to the party's local file) and the party's folder."""
    from covault.jobs.approvals import party_folder
    from covault.jobs.spec import bind_local, load_job

    job = load_job(args.job)
    if args.local is not None:
        job = bind_local(job, args.name, args.local)
    return job, party_folder(job, args.name, local=args.local, governance=args.governance)


def report(prog: str, decision, args: argparse.Namespace, path: Path) -> None:
    """The signed decision: one JSON line, or one line of text."""
    if args.json:
        import json

        print(json.dumps(decision.to_json(), sort_keys=True), flush=True)
        return
    what = "approved" if decision.approved else "rejected"
    print(f"{prog}: party {decision.party} {what} job {decision.job!r} (fingerprint {decision.fingerprint}); "
          f"signed decision in {path}", flush=True)  # fmt: skip


def main(args: argparse.Namespace) -> int:
    prog = "covault approve"

    def body() -> int:
        from covault.governance.approval import approval_path
        from covault.jobs.approvals import approve, review
        from covault.jobs.plan import format_plan

        job, folder = load(args)
        r = review(job, args.name, folder)
        out = sys.stderr if args.json else sys.stdout
        print(format_plan(r.plan), file=out)
        print(f"job {r.statement.name!r}, fingerprint {r.statement.fingerprint}; status {r.status}", file=out)
        if r.decision is not None:
            print(f"party {args.name} {r.decision.decision} this version on {r.decision.time}", file=out)
        if r.plan["refusals"]:
            approve(job, args.name, folder, plan=r.plan)  # raises the policy's refusal
        if not args.yes and not _ask(f"approve this job as party {args.name}? [y/N] "):
            print(f"{prog}: not approved (answer y, or pass --yes)", file=sys.stderr, flush=True)
            return EXIT_FAILED
        decision = approve(job, args.name, folder, plan=r.plan)
        report(prog, decision, args, approval_path(folder.state, decision.fingerprint, args.name))
        return EXIT_OK

    return run_job(prog, body)


def _ask(question: str) -> bool:
    print(question, end="", file=sys.stderr, flush=True)
    try:
        answer = sys.stdin.readline()
    except (OSError, ValueError):
        return False
    return answer.strip().lower() in ("y", "yes")
