"""``covault party CONFIG|JOB --as NAME [SCRIPT.py]``: one party of a job or of a consortium
config, on its own host (or started by ``covault run`` with an inherited listener). A job runs
under approvals and audit: only when every party approved this version of it
(``docs/governance.md``)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from covault.cli.common import error, output_options, print_warnings, progress, run_options
from covault.cli.tracking import log_tracking, tracking_options
from covault.exitcodes import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_TERMINATED, EXIT_USAGE

ORDER = 80
HELP = "run one party of a job or of a consortium config"
DESCRIPTION = None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", type=Path, help="job file, or consortium TOML config (then give SCRIPT)")
    p.add_argument("--as", dest="name", required=True, metavar="NAME", help="this party's name")
    p.add_argument(
        "script", type=Path, nargs="?", help="Python file defining main(session) (optional for a job file)"
    )
    p.add_argument(
        "--local",
        type=Path,
        metavar="FILE",
        help="this data owner's local file (data, test, policy, governance), never sent (job files only)",
    )
    p.add_argument(
        "--governance",
        type=Path,
        metavar="DIR",
        help="this party's governance folder: its signed approval, its audit log (job files only; "
        "default: its local file's governance key, else the folder of its key)",
    )
    run_options(p)
    output_options(p)
    tracking_options(p)
    p.add_argument(
        "--bind", metavar="HOST", help="listen on HOST instead of the configured host (e.g. 0.0.0.0)"
    )
    p.add_argument("--listen-fd", type=int, help=argparse.SUPPRESS)  # inherited listener (covault run)
    p.add_argument("--exit-with-stdin", action="store_true", help=argparse.SUPPRESS)


def fix_arguments(args: argparse.Namespace, extra: list[str]) -> list[str]:
    """argparse fills the optional SCRIPT before ``--as NAME``: a SCRIPT given after it is left
    over; take it. Returns what is still unrecognised."""
    if args.script is None and len(extra) == 1 and not extra[0].startswith("-"):
        args.script = Path(extra[0])
        return []
    return extra


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


def main(args: argparse.Namespace) -> int:
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
            if args.local is not None:
                from covault.jobs.spec import bind_local

                job = bind_local(job, args.name, args.local)
        else:
            if args.local is not None:
                raise ConfigError(
                    "--local gives a data owner's sources for a job file; this is a consortium config"
                )
            config = parse_config(raw, args.config)
        if args.governance is not None and (job is None or args.script is not None):
            raise ConfigError(
                "--governance is the folder of a job's approvals: give a job file and no SCRIPT"
            )
        if (args.mlflow is not None or args.wandb is not None) and (job is None or args.script is not None):
            raise ConfigError("--mlflow and --wandb log a job's result: give a job file and no SCRIPT")
        if args.name not in config.parties:
            raise ConfigError(
                f"party {args.name!r} is not in {args.config} (parties: {sorted(config.parties)})"
            )
        if args.script is not None:
            program = load_script(args.script)
        elif job is not None:
            from covault.jobs.approvals import party_folder
            from covault.jobs.program import job_program

            folder = party_folder(job, args.name, local=args.local, governance=args.governance)
            folder.identity()  # its signing key and the CA: checked before connecting
            folder.ca()
            program = job_program(
                job, progress=(args.name,) if progress(args) else False, governance={args.name: folder}
            )
        else:
            raise ConfigError(
                f"{args.config} is a consortium config, not a job file (it has no 'task'): give the "
                "SCRIPT.py every party runs"
            )
    except (ConfigError, CertificateError, CovaultError, OSError, SyntaxError) as exc:
        error(prog, exc, trace=isinstance(exc, SyntaxError))
        return EXIT_USAGE
    except Exception as exc:  # the script failed while loading
        error(prog, exc, trace=True)
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
        error(prog, exc)
        return EXIT_FAILED if _is_peer(exc) else EXIT_USAGE
    except CovaultError as exc:
        error(prog, exc)
        return EXIT_FAILED
    except Exception as exc:
        error(prog, exc, trace=True)
        return EXIT_FAILED
    if job is not None and args.script is None:
        _print_party_result(result, job, args)
        if args.mlflow is not None or args.wandb is not None:
            return _log_party(args, job, result, prog)
    elif args.json:
        import json

        from covault.jobs.report import json_safe

        print(json.dumps(json_safe(result), allow_nan=False, default=str), flush=True)
    else:
        print(result, flush=True)
    return EXIT_OK


def _log_party(args: argparse.Namespace, job, result: dict, prog: str) -> int:
    """``--mlflow`` / ``--wandb``: this party's own view of the job, one run (``docs/mlops.md``)."""
    from covault.errors import CovaultError
    from covault.jobs.local import assemble

    try:
        log_tracking(
            args, args.config, assemble(job, {args.name: result}, "tcp", result["seconds"]), prog, job
        )
    except CovaultError as exc:
        error(prog, exc)
        return EXIT_FAILED
    return EXIT_OK


def _run_script_party(args: argparse.Namespace, config, program, kw: dict):
    from covault.runtime import config_session

    with config_session(config, args.name, bind=args.bind, **kw) as session:
        return program(session)


def _run_job_party(args: argparse.Namespace, job, program, kw: dict):
    """This party's side of ``job``, with progress on stderr (a bar on a terminal)."""
    from covault.jobs.progress import progress_display, resolve_mode
    from covault.runtime import config_session

    mode = resolve_mode(progress(args))
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
        print_warnings(f"covault party {args.name}", result)
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
    elif job.reveal_model_to:
        lines.append(f"the model and its metrics are revealed to {', '.join(job.reveal_model_to)} only")
    else:
        lines.append("the model and its metrics are revealed to nobody")
    if result.get("model_path"):
        lines.append(f"model written to {result['model_path']} (ONNX)")
    stored = result.get("model_store")
    if stored and stored.get("path"):
        lines.append(
            f"model {stored['model']!r}: this party's shares, encrypted at rest, in {stored['path']}"
        )
    print("\n".join(lines), flush=True)
    print_warnings(f"covault party {args.name}", result)


def _is_peer(exc: BaseException) -> bool:
    from covault.errors import PeerError

    return isinstance(exc, PeerError)
