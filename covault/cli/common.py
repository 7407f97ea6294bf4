"""What the commands share: option groups, argument types, and how results and errors are
printed (one line per error on stderr; exit statuses from :mod:`covault.exitcodes`)."""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from covault.exitcodes import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE


def run_options(p: argparse.ArgumentParser) -> None:
    """``--transcript DIR`` and ``--job NAME``: options of the commands that start parties."""
    p.add_argument(
        "--transcript",
        metavar="DIR",
        type=Path,
        help="record every message each party sends in DIR/NAME.transcript (default: $COVAULT_TRANSCRIPT_DIR)",
    )
    p.add_argument(
        "--job",
        default=None,
        help="job name; every party of one job must use the same (it is part of the session id)",
    )


def output_options(p: argparse.ArgumentParser) -> None:
    """``--json`` and ``--quiet``."""
    p.add_argument(
        "--json", action="store_true", help="print the result as one JSON object (the last line of stdout)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def progress(args: argparse.Namespace) -> bool:
    """Whether to show progress on stderr."""
    return not (args.quiet or args.json)


def error_line(prog: str, exc: BaseException) -> None:
    """One line on stderr: the exception's type and message, and notes not already said."""
    msg = " ".join(str(exc).split())
    notes = [n for n in getattr(exc, "__notes__", []) if not _said(msg, n)]
    tail = f" ({'; '.join(notes)})" if notes else ""
    print(f"{prog}: error: {type(exc).__name__}: {msg}{tail}", file=sys.stderr, flush=True)


def _said(msg: str, note: str) -> bool:
    """A note ``raised at party 'x'`` adds nothing (or misleads) where the message names the party
    it is about: every party of a job raises the failing party's error."""
    return note.startswith("raised at party ") and "party '" in msg


def error(prog: str, exc: BaseException, *, trace: bool = False) -> None:
    """The error on stderr, its notes on lines of their own; the traceback too with ``trace``."""
    if trace:
        traceback.print_exception(exc, file=sys.stderr)
    notes = "".join(f"\n  ({n})" for n in getattr(exc, "__notes__", []))
    print(f"{prog}: error: {type(exc).__name__}: {exc}{notes}", file=sys.stderr, flush=True)


def run_job(prog: str, body: Callable[[], int]) -> int:
    """``body()`` with job errors as one line on stderr: 2 for a bad job or data, 1 for a failed
    computation, 130 on Ctrl-C; a bug (not a covault error) also prints its traceback."""
    import warnings

    from covault.deploy.certs import CertificateError
    from covault.deploy.config import ConfigError
    from covault.errors import CovaultError, CovaultWarning, PeerError

    try:
        with warnings.catch_warnings():  # the result's warnings are printed as one line each
            warnings.simplefilter("ignore", CovaultWarning)
            return body()
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except PeerError as exc:  # a ConnectionError, yet a failed computation, not a bad job
        error_line(prog, exc)
        return EXIT_FAILED
    except (ConfigError, CertificateError, OSError) as exc:  # JobError and DataError included
        error_line(prog, exc)
        return EXIT_USAGE
    except CovaultError as exc:
        error_line(prog, exc)
        return EXIT_FAILED
    except Exception as exc:
        error(prog, exc, trace=True)
        return EXIT_FAILED


def print_result(result: dict, args: argparse.Namespace, prog: str, extra: list[str] | None = None) -> None:
    """A job's result: the table (or one JSON line) on stdout; the report written if asked for."""
    from covault.jobs.report import format_table, json_safe, write_html_report

    report = None
    if args.report is not None:
        report = write_html_report(result, args.report)
    if args.json:
        import json

        if report is not None:
            print(f"{prog}: report written to {report}", file=sys.stderr, flush=True)
        print(json.dumps(json_safe(result), allow_nan=False), flush=True)
        print_warnings(prog, result)
        return
    print()
    print(format_table(result))
    for line in extra or []:
        print(line)
    if report is not None:
        print(f"report: {report.resolve()}")
    sys.stdout.flush()
    print_warnings(prog, result)


def print_warnings(prog: str, result: dict) -> None:
    """One line on stderr per warning of a job result (``TrainingDivergedWarning``)."""
    for w in result.get("warnings") or []:
        print(f"{prog}: warning: {w['type']}: {w['message']}", file=sys.stderr, flush=True)


def serving_config(path: Path) -> tuple[Any, Path | None]:
    """``(config, model folder)`` of ``covault serve`` / ``predict`` / ``gateway``: a consortium
    config (folder None: ``models`` next to it), or a job file's parties with its ``model_dir``."""
    from covault.deploy.config import parse_config, read_toml

    raw = read_toml(path)
    if "task" in raw:  # a job file
        from covault.jobs.spec import parse_job

        job = parse_job(raw, path)
        return job.config, job.model_dir
    return parse_config(raw, path), None
