"""Command-line interface.

    covault demo [--protocol P] [--vertical] [--out DIR]   hospitals train a breast-cancer model jointly
    covault train JOB.toml [--json] [--compare-plaintext]  every party of a job on this machine
    covault party JOB.toml --as NAME                       one party of a job, on its own host
    covault showcase                                       engine tour: pooled statistics under MPC
    covault certs init DIR [--days N]                      consortium CA (DIR/ca.pem, DIR/ca.key)
    covault certs issue DIR NAME [--days N]                party key and certificate (DIR/NAME.key, .pem)
    covault party CONFIG --as NAME SCRIPT.py               one party of a consortium, running a script
    covault run CONFIG SCRIPT.py                           every party of CONFIG on this machine

A job file (``docs/jobs.md``) is a consortium config with a ``task``. ``SCRIPT.py`` defines
``main(session)``; every party runs it (SPMD) and prints its return value. ``--json`` prints one
JSON object as the last line of stdout. Exit status: 0 success, 1 the computation failed (here
or at a peer), 2 bad command line, config, job, data, certificate or script, 130 interrupted,
143 terminated.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
import traceback
from pathlib import Path

from covault import schemes
from covault.exitcodes import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_TERMINATED, EXIT_USAGE


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="covault", description="Secure multi-party computation.")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo",
        help="three hospitals train a breast-cancer classifier jointly under MPC (real processes, TLS)",
        description="Three hospitals each hold part of scikit-learn's Wisconsin breast-cancer data "
        "and train logistic regression jointly under MPC, one OS process per hospital over mutual "
        "TLS; the result is compared with the same model trained centrally on the pooled rows, "
        "and an HTML report (loss curve, metrics, traffic) is written.",
    )
    demo.add_argument("--protocol", choices=schemes.names(), default=schemes.DEFAULT)
    demo.add_argument("--transport", choices=["tcp", "local"], default="tcp")
    demo.add_argument("--epochs", type=_positive_int, default=10, help="training epochs (default 10)")
    demo.add_argument(
        "--vertical",
        action="store_true",
        help="split the columns instead of the patients (rows matched by private set intersection)",
    )
    demo.add_argument(
        "--out", type=Path, metavar="DIR", help="write the job, data, model and report.html into DIR"
    )
    demo.add_argument(
        "--report",
        type=Path,
        metavar="FILE",
        help="HTML report path (default: DIR/report.html with --out, else ./covault-demo-report.html)",
    )
    _output_options(demo)

    show = sub.add_parser("showcase", help="engine tour: hospitals pool statistics under MPC")
    show.add_argument("--protocol", choices=[*schemes.names(), "both"], default="both")
    show.add_argument("--transport", choices=["tcp", "local"], default="tcp")

    train = sub.add_parser(
        "train",
        help="run every party of a job on this machine and report the model's held-out metrics",
        description="Run every party of JOB.toml on this machine (one process per party over "
        "mutual TLS with throw-away certificates, or threads with --transport local); addresses "
        "and certificates in the file are ignored.",
    )
    train.add_argument("job", type=Path, help="job TOML file (docs/jobs.md)")
    train.add_argument("--transport", choices=["tcp", "local"], default="tcp")
    train.add_argument(
        "--compare-plaintext",
        action="store_true",
        help="also train the same model centrally on the pooled plaintext rows",
    )
    train.add_argument("--report", type=Path, metavar="FILE", help="write an HTML report to FILE")
    _output_options(train)

    certs = sub.add_parser("certs", help="consortium CA and party certificates")
    csub = certs.add_subparsers(dest="certs_command", required=True)
    init = csub.add_parser("init", help="create the consortium CA in DIR (ca.pem, ca.key)")
    init.add_argument("dir", type=Path)
    init.add_argument("--days", type=int, default=365, help="validity in days (default 365)")
    issue = csub.add_parser("issue", help="create DIR/NAME.key and DIR/NAME.pem signed by the CA in DIR")
    issue.add_argument("dir", type=Path)
    issue.add_argument("name")
    issue.add_argument("--days", type=int, default=365, help="validity in days (default 365)")

    party = sub.add_parser("party", help="run one party of a job or of a consortium config")
    party.add_argument("config", type=Path, help="job file, or consortium TOML config (then give SCRIPT)")
    party.add_argument("--as", dest="name", required=True, metavar="NAME", help="this party's name")
    party.add_argument(
        "script", type=Path, nargs="?", help="Python file defining main(session) (optional for a job file)"
    )
    _common_run_options(party)
    _output_options(party)
    party.add_argument(
        "--bind", metavar="HOST", help="listen on HOST instead of the configured host (e.g. 0.0.0.0)"
    )
    party.add_argument("--listen-fd", type=int, help=argparse.SUPPRESS)  # inherited listener (covault run)
    party.add_argument("--exit-with-stdin", action="store_true", help=argparse.SUPPRESS)

    run = sub.add_parser("run", help="run every party of a config on this machine (loopback, fresh ports)")
    run.add_argument("config", type=Path, help="consortium TOML config")
    run.add_argument("script", type=Path, help="Python file defining main(session)")
    _common_run_options(run)
    return parser


def _common_run_options(p: argparse.ArgumentParser) -> None:
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


def _output_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--json", action="store_true", help="print the result as one JSON object (the last line of stdout)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    # argparse fills an optional positional before ``--as NAME``: a SCRIPT given after it is left over
    if args.command == "party" and args.script is None and len(extra) == 1 and not extra[0].startswith("-"):
        args.script, extra = Path(extra[0]), []
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "demo":
        return _demo(args)
    if args.command == "train":
        return _train(args)
    if args.command == "showcase":
        from covault import showcase

        return showcase.main(None if args.protocol == "both" else (args.protocol,), args.transport)
    if args.command == "certs":
        return _certs(args)
    if args.command == "party":
        return _party(args)
    if args.command == "run":
        from covault.launch.consortium import run_consortium

        return run_consortium(args.config, args.script, transcript=args.transcript, job=args.job)
    return EXIT_USAGE


def _error_line(prog: str, exc: BaseException) -> None:
    """One line on stderr: the exception's type and message, and notes not already said."""
    msg = " ".join(str(exc).split())
    notes = [n for n in getattr(exc, "__notes__", []) if not _said(msg, n)]
    tail = f" ({'; '.join(notes)})" if notes else ""
    print(f"{prog}: error: {type(exc).__name__}: {msg}{tail}", file=sys.stderr, flush=True)


def _said(msg: str, note: str) -> bool:
    """A note ``raised at party 'x'`` adds nothing (or misleads) where the message names the party
    it is about: every party of a job raises the failing party's error."""
    return note.startswith("raised at party ") and "party '" in msg


def _progress(args: argparse.Namespace) -> bool:
    return not (args.quiet or args.json)


def _run_job(prog: str, body) -> int:
    """``body()`` with job errors as one line on stderr: 2 for a bad job or data, 1 for a failed
    computation, 130 on Ctrl-C; a bug (not a covault error) also prints its traceback."""
    import warnings

    from covault.deploy.certs import CertificateError
    from covault.deploy.config import ConfigError
    from covault.errors import CovaultError, CovaultWarning

    try:
        with warnings.catch_warnings():  # the result's warnings are printed as one line each
            warnings.simplefilter("ignore", CovaultWarning)
            return body()
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except (ConfigError, CertificateError, OSError) as exc:  # JobError and DataError included
        _error_line(prog, exc)
        return EXIT_USAGE
    except CovaultError as exc:
        _error_line(prog, exc)
        return EXIT_FAILED
    except Exception as exc:
        _error(prog, exc, trace=True)
        return EXIT_FAILED


def _print_result(result: dict, args: argparse.Namespace, prog: str, extra: list[str] | None = None) -> None:
    """The table (or one JSON line) on stdout; the report written if asked for."""
    from covault.jobs.report import format_table, json_safe, write_html_report

    report = None
    if args.report is not None:
        report = write_html_report(result, args.report)
    if args.json:
        import json

        if report is not None:
            print(f"{prog}: report written to {report}", file=sys.stderr, flush=True)
        print(json.dumps(json_safe(result), allow_nan=False), flush=True)
        _print_warnings(prog, result)
        return
    print()
    print(format_table(result))
    for line in extra or []:
        print(line)
    if report is not None:
        print(f"report: {report.resolve()}")
    sys.stdout.flush()
    _print_warnings(prog, result)


def _print_warnings(prog: str, result: dict) -> None:
    """One line on stderr per warning of a job result (``TrainingDivergedWarning``)."""
    for w in result.get("warnings") or []:
        print(f"{prog}: warning: {w['type']}: {w['message']}", file=sys.stderr, flush=True)


def _train(args: argparse.Namespace) -> int:
    from covault.jobs.local import run_local

    def body() -> int:
        result = run_local(
            args.job,
            transport=args.transport,
            compare_plaintext=args.compare_plaintext,
            progress=_progress(args),
        )
        _print_result(result, args, "covault train")
        return EXIT_OK

    return _run_job("covault train", body)


def _demo(args: argparse.Namespace) -> int:
    import tempfile

    from covault.jobs.demo import make_breast_cancer_job
    from covault.jobs.local import run_local

    def body() -> int:
        with contextlib.ExitStack() as stack:
            where = args.out or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="covault-demo-")))
            path = make_breast_cancer_job(where, 3, args.protocol, vertical=args.vertical, epochs=args.epochs)
            if not args.json:
                print(_demo_intro(args), flush=True)
            result = run_local(
                path, transport=args.transport, compare_plaintext=True, progress=_progress(args)
            )
            extra = []
            if args.out is None:
                result["model_out"] = None  # in the temporary folder, removed below
                extra.append("(the job's files and model were in a temporary folder; --out DIR keeps them)")
            else:
                extra.append(f"job file, data and model: {path.parent.resolve()}")
            if args.report is None:
                args.report = where / "report.html" if args.out else Path("covault-demo-report.html")
            _print_result(result, args, "covault demo", extra)
        return EXIT_OK

    return _run_job("covault demo", body)


def _demo_intro(args: argparse.Namespace) -> str:
    import textwrap

    from covault.randomness.providers import needs_dealer

    hospitals = ["hospital_a", "hospital_b", "hospital_c"]
    n = schemes.get(args.protocol).parties
    proto = f"{args.protocol} secret sharing " + (
        f"between {' and '.join(hospitals[:n])}" if hospitals[n:] else "among the three hospitals"
    )
    proto += " with a dealer" if needs_dealer(args.protocol) else ""
    proto += f" ({', '.join(hospitals[n:])} brings data)" if hospitals[n:] else ""
    how = "one OS process each, over mutual TLS" if args.transport == "tcp" else "as threads of this process"
    if args.vertical:
        split = (
            "hold different measurements of the same 569 patients of the Wisconsin breast-cancer data "
            "(the mean / error / worst features; the diagnosis at hospital_a); each lacks some patients, "
            "and the rows are matched by private set intersection on patient_id"
        )
    else:
        split = "each hold some of the 569 patients of the Wisconsin breast-cancer data (30 features)"
    epochs = f"{args.epochs} epoch{'s' if args.epochs != 1 else ''}"
    text = (
        f"covault demo: three hospitals {split}. They train logistic regression ({epochs}) together "
        f"under MPC: {proto}, {how}. No hospital sees another's records. Baseline: the same model "
        "trained centrally on the pooled rows."
    )
    return textwrap.fill(text, width=100)


def _error(prog: str, exc: BaseException, *, trace: bool = False) -> None:
    if trace:
        traceback.print_exception(exc, file=sys.stderr)
    notes = "".join(f"\n  ({n})" for n in getattr(exc, "__notes__", []))
    print(f"{prog}: error: {type(exc).__name__}: {exc}{notes}", file=sys.stderr, flush=True)


def _certs(args: argparse.Namespace) -> int:
    from covault.deploy import certs

    try:
        if args.certs_command == "init":
            path = certs.init_ca(args.dir, days=args.days)
            print(f"consortium CA: {path} (keep {args.dir / certs.CA_KEY} offline: it issues identities)")
        else:
            cert, key = certs.issue(args.dir, args.name, days=args.days)
            print(
                f"party {args.name!r}: certificate {cert}, key {key} (give these and ca.pem to that party only)"
            )
    except (certs.CertificateError, OSError) as exc:
        _error(f"covault certs {args.certs_command}", exc)
        return EXIT_USAGE
    return EXIT_OK


class _Terminated(BaseException):
    """SIGTERM arrived: stop like on Ctrl-C (peers are told), exit 143."""


def _on_sigterm(signum, frame) -> None:
    raise _Terminated


def _watch_stdin() -> None:
    """Exit when stdin closes: the launching ``covault run`` went away."""
    with contextlib.suppress(Exception):
        while os.read(0, 1 << 12):  # the raw fd: a buffered reader would block interpreter exit
            pass
    os._exit(EXIT_TERMINATED)


def load_script(path: Path):
    """The ``main(session)`` function of a Python file (CovaultError if absent)."""
    import importlib.util

    from covault.errors import CovaultError

    if not path.is_file():
        raise CovaultError(f"script {path} not found")
    spec = importlib.util.spec_from_file_location(f"covault_script_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise CovaultError(f"cannot load {path} as a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # lets the script's own classes pickle and introspect
    spec.loader.exec_module(module)
    fn = getattr(module, "main", None)
    if not callable(fn):
        raise CovaultError(f"script {path} defines no main(session) function")
    return fn


def _party(args: argparse.Namespace) -> int:
    prog = f"covault party {args.name}"
    logging.basicConfig(
        level=logging.WARNING, format=f"{prog}: %(levelname)s: %(message)s", stream=sys.stderr
    )
    if args.exit_with_stdin:
        threading.Thread(target=_watch_stdin, name="covault-watch-launcher", daemon=True).start()
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return _party_body(args, prog)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except _Terminated:
        print(f"{prog}: terminated", file=sys.stderr, flush=True)
        return EXIT_TERMINATED


def _party_body(args: argparse.Namespace, prog: str) -> int:
    import socket

    from covault.deploy.certs import CertificateError
    from covault.deploy.config import ConfigError, parse_config, read_toml
    from covault.errors import CovaultError
    from covault.transport.transcript import transcript_dir

    job = None
    try:
        raw = read_toml(args.config)
        if "task" in raw:  # a job file
            from covault.jobs.spec import parse_job

            job = parse_job(raw, args.config)
            config = job.config
        else:
            config = parse_config(raw, args.config)
        if args.name not in config.parties:
            raise ConfigError(
                f"party {args.name!r} is not in {args.config} (parties: {sorted(config.parties)})"
            )
        if args.script is not None:
            program = load_script(args.script)
        elif job is not None:
            from covault.jobs.program import job_program

            program = job_program(job, progress=(args.name,) if _progress(args) else False)
        else:
            raise ConfigError(
                f"{args.config} is a consortium config, not a job file (it has no 'task'): give the "
                "SCRIPT.py every party runs"
            )
    except (ConfigError, CertificateError, CovaultError, OSError, SyntaxError) as exc:
        _error(prog, exc, trace=isinstance(exc, SyntaxError))
        return EXIT_USAGE
    except Exception as exc:  # the script failed while loading
        _error(prog, exc, trace=True)
        return EXIT_USAGE
    listener = None if args.listen_fd is None else socket.socket(fileno=args.listen_fd)
    session_job = args.job or ""
    if job is not None and args.script is None and not args.job:
        session_job = job.fingerprint_parts()  # parties of other jobs refuse this one, naming the keys
    kw = {"job": session_job, "transcript_dir": transcript_dir(args.transcript), "listener": listener}
    try:
        if job is not None and args.script is None:
            result = _run_job_party(args, job, program, kw)
        else:
            result = _run_script_party(args, config, program, kw)
    except (ConfigError, CertificateError) as exc:
        _error(prog, exc)
        return EXIT_FAILED if _is_peer(exc) else EXIT_USAGE
    except CovaultError as exc:
        _error(prog, exc)
        return EXIT_FAILED
    except Exception as exc:
        _error(prog, exc, trace=True)
        return EXIT_FAILED
    if job is not None and args.script is None:
        _print_party_result(result, job, args)
    elif args.json:
        import json

        from covault.jobs.report import json_safe

        print(json.dumps(json_safe(result), allow_nan=False, default=str), flush=True)
    else:
        print(result, flush=True)
    return EXIT_OK


def _run_script_party(args: argparse.Namespace, config, program, kw: dict):
    from covault.runtime import config_session

    with config_session(config, args.name, bind=args.bind, **kw) as session:
        return program(session)


def _run_job_party(args: argparse.Namespace, job, program, kw: dict):
    """This party's side of ``job``, with progress on stderr (a bar on a terminal)."""
    from covault.jobs.progress import progress_display, resolve_mode
    from covault.runtime import config_session

    mode = resolve_mode(_progress(args))
    peers = [p for p in job.config.names if p != args.name]
    start = f"party {args.name}: connecting to {', '.join(peers)}"
    with progress_display(mode, args.name, start=start, epochs=job.model.get("epochs")):
        with config_session(job.config, args.name, bind=args.bind, **kw) as session:
            return program(session)


def _print_party_result(result: dict, job, args: argparse.Namespace) -> None:
    """A party's job result: one JSON line, or a few lines of text."""
    from covault.jobs.report import METRIC_NAMES, format_metric, json_safe

    if args.json:
        import json

        print(json.dumps(json_safe(result), allow_nan=False), flush=True)
        _print_warnings(f"covault party {args.name}", result)
        return
    stats = result["stats"]
    lines = [
        f"party {args.name} ({', '.join(result['roles']) or 'no role'}): {job.task} on label "
        f"{job.label!r}, protocol {job.protocol}; {result['seconds']:.2f} s, "
        f"{stats['bytes_sent'] / 1e6:.2f} MB sent, {stats['rounds']} rounds"
    ]
    metrics = result.get("metrics")
    if metrics:
        shown = [
            f"{METRIC_NAMES.get(k, k)} {format_metric(k, v)}" for k, v in metrics.items() if v is not None
        ]
        lines.append("held-out metrics: " + ", ".join(shown))
    else:
        lines.append(f"the model and its metrics are revealed to {', '.join(job.reveal_model_to)} only")
    if result.get("model_path"):
        lines.append(f"model written to {result['model_path']} (ONNX)")
    print("\n".join(lines), flush=True)
    _print_warnings(f"covault party {args.name}", result)


def _is_peer(exc: BaseException) -> bool:
    from covault.errors import PeerError

    return isinstance(exc, PeerError)


if __name__ == "__main__":
    sys.exit(main())
