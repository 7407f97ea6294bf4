"""``covault serve CONFIG --as NAME --model NAME``: a compute party (or the 2pc dealer) answers
one client's private queries to a secret model in one long-lived session (``docs/serving.md``,
"Service")."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from covault.cli.common import run_job, serving_config
from covault.exitcodes import EXIT_OK

ORDER = 77
HELP = "serve a secret model's private predictions to one client (every compute party and the dealer)"
DESCRIPTION = (
    "serve: every compute party of CONFIG (and the 2pc dealer) runs it (--as NAME); they load "
    "their shares of MODEL (--dir, default: models next to CONFIG) and answer the queries of the "
    "client, a data party of CONFIG (--client, default: the only one), in one mutually "
    "authenticated session, until the client is done (covault predict, covault.serving.Client). "
    "They learn each query's row count, never its rows or the answer."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", type=Path, help="consortium TOML config, or the job file that trained MODEL")
    p.add_argument("--as", dest="name", required=True, metavar="NAME", help="this party")
    p.add_argument("--model", required=True, metavar="MODEL", help="the secret model's name")
    p.add_argument(
        "--client", metavar="NAME", help="the client party (default: the config's only data party)"
    )
    p.add_argument(
        "--dir",
        type=Path,
        metavar="DIR",
        help="the model folder (default: a job's model_dir, else models next to CONFIG)",
    )
    p.add_argument(
        "--idle",
        type=float,
        default=86400.0,
        metavar="S",
        help="seconds to wait for the next query (default 86400)",
    )
    p.add_argument(
        "--transcript",
        type=Path,
        metavar="DIR",
        help="record every message this party sends in DIR/NAME.transcript",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object when the client is done")


def main(args: argparse.Namespace) -> int:
    prog = f"covault serve (party {args.name})"

    def body() -> int:
        from covault.serving.service import serve_party

        config, model_dir = serving_config(args.config)
        out = serve_party(
            config,
            args.name,
            args.model,
            client=args.client,
            model_dir=args.dir or model_dir,
            idle=args.idle,
            transcript_dir=args.transcript,
        )
        if args.json:
            print(json.dumps(out), flush=True)
        else:
            print(f"model {out['model']!r}: answered {out['queries']} queries of client {out['client']!r}")
        return EXIT_OK

    return run_job(prog, body)
