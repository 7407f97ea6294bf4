"""``covault console --as NAME --jobs DIR [--local FILE] [--port P]``: the operator's web
console of one party, on this host's loopback interface (``docs/console.md``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from covault.exitcodes import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE

ORDER = 68
HELP = "serve a party's operator console (jobs, approvals, runs, audit trail, certificate) on localhost"
DESCRIPTION = (
    "Serve a web console for party NAME on 127.0.0.1:PORT: the job files of DIR with their "
    "fingerprints and this party's status, each job's plan with Approve / Reject / Run, the runs "
    "and what the audit log records of them, the audit trail with its verification, and the "
    "party's certificate and its expiry. It prints a URL with a one-time token: opening it starts "
    "a session (a cookie); without it no page is shown. Loopback only: from another host use SSH "
    "port forwarding. Needs the console extra (pip install 'covault[console]')."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--as", dest="name", required=True, metavar="NAME", help="this party's name")
    p.add_argument("--jobs", type=Path, required=True, metavar="DIR", help="the folder of job files (*.toml)")
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
        help="the party's governance folder (default: its local file's governance key, else the folder of its key)",
    )
    p.add_argument("--port", type=int, default=8765, help="the port (default 8765; 0: any free port)")
    p.add_argument("--host", default="127.0.0.1", help="the loopback address to serve on (default 127.0.0.1)")


def main(args: argparse.Namespace) -> int:
    from covault.console.auth import ConsoleError, Gate, check_loopback

    prog = "covault console"
    try:
        check_loopback(args.host)
        import uvicorn

        from covault.console.app import create_app
        from covault.console.party import PartyView

        view = PartyView(args.name, args.jobs, local=args.local, governance=args.governance)
        sock = _listen(args.host, args.port)
    except ImportError as exc:
        print(
            f"{prog}: error: {exc} (install the console extra: pip install 'covault[console]')",
            file=sys.stderr,
        )
        return EXIT_USAGE
    except (ConsoleError, OSError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    gate = Gate()
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"{prog}: party {args.name}, jobs in {args.jobs}", flush=True)
    print(f"{prog}: open http://{shown}:{port}/login?token={gate.token}", flush=True)
    config = uvicorn.Config(create_app(view, gate), log_level="warning", access_log=False, lifespan="on")
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn shut down (its runs stopped) and passes Ctrl-C on
        print(f"{prog}: stopped", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    print(f"{prog}: stopped", file=sys.stderr, flush=True)
    return EXIT_OK


def _listen(host: str, port: int):
    """A listening socket on the loopback ``host`` (the port chosen before the URL is printed)."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(64)
    return sock
