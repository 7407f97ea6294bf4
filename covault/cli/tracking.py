"""``--mlflow [TRACKING_URI]`` and ``--wandb [DIR]`` of ``covault train``, ``covault demo`` and
``covault party``: each party's view of the result logged after the run (``docs/mlops.md``).
Not a command."""

from __future__ import annotations

import argparse
import sys
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any


def tracking_options(p: argparse.ArgumentParser) -> None:
    """Add ``--mlflow [TRACKING_URI]`` and ``--wandb [DIR]`` (after the job argument)."""
    p.add_argument(
        "--mlflow",
        nargs="?",
        const="",
        metavar="TRACKING_URI",
        help="log one MLflow run per party, or this party's with covault party (default: the job's [mlflow] tracking_uri, else ./mlruns; "
        "needs pip install 'covault[mlops]')",
    )
    p.add_argument(
        "--wandb",
        nargs="?",
        const="./wandb-runs",
        metavar="DIR",
        help="log one Weights & Biases run per party, offline, under DIR (default ./wandb-runs)",
    )


def log_tracking(
    args: argparse.Namespace, job_path: Path, result: dict[str, Any], prog: str, job: Any = None
) -> None:
    """Log ``result`` where ``--mlflow`` / ``--wandb`` ask; one line per tool on stderr, and the
    tools' own output too (stdout's last line stays ``--json``'s result). ``job``: the parsed
    job (default: read from ``job_path``)."""
    if args.mlflow is None and args.wandb is None:
        return
    from covault.errors import CovaultError
    from covault.jobs.errors import JobError
    from covault.jobs.spec import load_job

    job = job if job is not None else load_job(job_path)
    report = getattr(args, "report", None)
    report = report if report is not None and Path(report).is_file() else None
    try:
        with redirect_stdout(sys.stderr):  # MLflow prints its run links on stdout
            if args.mlflow is not None:
                from covault.mlops.mlflow_log import log_to_mlflow, settings

                runs = log_to_mlflow(job, result, tracking_uri=args.mlflow or None, report=report)
                where = settings(job, args.mlflow or None)["tracking_uri"]
                print(f"{prog}: mlflow: {len(runs)} runs ({', '.join(runs)}) at {where}", file=sys.stderr)
            if args.wandb is not None:
                from covault.mlops.wandb_log import log_to_wandb

                runs = log_to_wandb(job, result, args.wandb, report=report)
                print(
                    f"{prog}: wandb (offline): {len(runs)} runs under {Path(args.wandb) / 'wandb'}",
                    file=sys.stderr,
                )
    except ImportError as exc:
        raise JobError(
            f"{prog} --mlflow / --wandb: {exc.name} is missing: pip install 'covault[mlops]'"
        ) from None
    except Exception as exc:  # the tool's own errors (server unreachable, ...): one line, exit 1
        if type(exc).__module__.split(".")[0] not in ("mlflow", "wandb"):
            raise
        raise CovaultError(f"logging the result failed: {type(exc).__name__}: {exc}") from exc
