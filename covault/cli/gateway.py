"""``covault gateway CONFIG --as NAME --model NAME --port P``: the client's HTTP gateway on
loopback, so that an application can POST its rows as JSON to a private inference service
(``docs/serving.md``, "Service")."""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import sys
from pathlib import Path

from covault.cli.common import run_job, serving_config
from covault.exitcodes import EXIT_OK

ORDER = 79
HELP = "the client's HTTP gateway to a served secret model (loopback, POST JSON rows)"
DESCRIPTION = (
    "gateway: the client (--as NAME, a data party of CONFIG) joins the parties running covault "
    'serve for MODEL and answers POST /predict {"rows": [[...], ...]} on HOST:PORT (loopback only) '
    "with the header Authorization: Bearer TOKEN, TOKEN read from --token-file (written fresh, mode "
    "0600). Ctrl-C or SIGTERM: the client tells the service it is done."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", type=Path, help="consortium TOML config, or the job file that trained MODEL")
    p.add_argument("--as", dest="name", required=True, metavar="NAME", help="this client party")
    p.add_argument("--model", required=True, metavar="MODEL", help="the secret model's name")
    p.add_argument("--host", default="127.0.0.1", help="a loopback address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8377, help="the port (default 8377)")
    p.add_argument(
        "--token-file",
        type=Path,
        metavar="FILE",
        help="where to write the token (default: NAME.gateway.token next to CONFIG)",
    )


def write_token(path: Path) -> str:
    """A fresh bearer token in ``path`` (mode 0600, replacing an older one)."""
    token = secrets.token_urlsafe(32)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


def main(args: argparse.Namespace) -> int:
    prog = f"covault gateway (party {args.name})"

    def body() -> int:
        from covault.serving.client import Client
        from covault.serving.gateway import GatewayServer

        def stop(signum, frame):
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, stop)
        token_file = args.token_file or args.config.absolute().parent / f"{args.name}.gateway.token"
        with Client(serving_config(args.config)[0], as_=args.name, model=args.model) as client:
            server = GatewayServer(client, args.host, args.port, write_token(token_file))
            print(
                f"gateway of {args.name!r} to model {args.model!r}: POST http://{args.host}:{server.server_port}"
                f"/predict (bearer token in {token_file})",
                file=sys.stderr,
                flush=True,
            )
            try:
                server.serve_forever()
            except KeyboardInterrupt:
                pass  # the client says it is done
            finally:
                server.server_close()
            if server.failure is not None:
                raise server.failure
        return EXIT_OK

    return run_job(prog, body)
