"""Command-line interface.

    covault demo                                   engine showcase
    covault certs init DIR [--days N]              consortium CA (DIR/ca.pem, DIR/ca.key)
    covault certs issue DIR NAME [--days N]        party key and certificate (DIR/NAME.key, .pem)
    covault party CONFIG --as NAME SCRIPT.py       run one party of a consortium
    covault run CONFIG SCRIPT.py                   run every party of CONFIG on this machine

``SCRIPT.py`` defines ``main(session)``; every party runs it (SPMD) and prints its return value.
Exit status: 0 success, 1 the computation failed (here or at a peer), 2 bad command line,
config, certificate or script, 130 interrupted, 143 terminated.
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

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 130, 143


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="covault", description="Secure multi-party computation.")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the engine showcase: hospitals pool statistics under MPC")
    demo.add_argument("--protocol", choices=["rep3", "2pc", "both"], default="both")
    demo.add_argument("--transport", choices=["tcp", "local"], default="tcp")

    certs = sub.add_parser("certs", help="consortium CA and party certificates")
    csub = certs.add_subparsers(dest="certs_command", required=True)
    init = csub.add_parser("init", help="create the consortium CA in DIR (ca.pem, ca.key)")
    init.add_argument("dir", type=Path)
    init.add_argument("--days", type=int, default=365, help="validity in days (default 365)")
    issue = csub.add_parser("issue", help="create DIR/NAME.key and DIR/NAME.pem signed by the CA in DIR")
    issue.add_argument("dir", type=Path)
    issue.add_argument("name")
    issue.add_argument("--days", type=int, default=365, help="validity in days (default 365)")

    party = sub.add_parser("party", help="run one party of a consortium config")
    party.add_argument("config", type=Path, help="consortium TOML config")
    party.add_argument("--as", dest="name", required=True, metavar="NAME", help="this party's name")
    party.add_argument("script", type=Path, help="Python file defining main(session)")
    _common_run_options(party)
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


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "demo":
        from covault import showcase

        protocols = ("rep3", "2pc") if args.protocol == "both" else (args.protocol,)
        return showcase.main(protocols, args.transport)
    if args.command == "certs":
        return _certs(args)
    if args.command == "party":
        return _party(args)
    if args.command == "run":
        from covault.consortium import run_consortium

        return run_consortium(args.config, args.script, transcript=args.transcript, job=args.job)
    return EXIT_USAGE


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
    from covault.deploy.config import ConfigError, load_config
    from covault.errors import CovaultError
    from covault.runtime import config_session
    from covault.transport.transcript import transcript_dir

    try:
        config = load_config(args.config)
        if args.name not in config.parties:
            raise ConfigError(
                f"party {args.name!r} is not in {args.config} (parties: {sorted(config.parties)})"
            )
        program = load_script(args.script)
    except (ConfigError, CertificateError, CovaultError, OSError, SyntaxError) as exc:
        _error(prog, exc, trace=isinstance(exc, SyntaxError))
        return EXIT_USAGE
    except Exception as exc:  # the script failed while loading
        _error(prog, exc, trace=True)
        return EXIT_USAGE
    listener = None if args.listen_fd is None else socket.socket(fileno=args.listen_fd)
    kw = {"job": args.job or "", "transcript_dir": transcript_dir(args.transcript), "listener": listener}
    try:
        with config_session(config, args.name, bind=args.bind, **kw) as session:
            result = program(session)
    except (ConfigError, CertificateError) as exc:
        _error(prog, exc)
        return EXIT_FAILED if _is_peer(exc) else EXIT_USAGE
    except CovaultError as exc:
        _error(prog, exc)
        return EXIT_FAILED
    except Exception as exc:
        _error(prog, exc, trace=True)
        return EXIT_FAILED
    print(result, flush=True)
    return EXIT_OK


def _is_peer(exc: BaseException) -> bool:
    from covault.errors import PeerError

    return isinstance(exc, PeerError)


if __name__ == "__main__":
    sys.exit(main())
