"""``covault serve CONFIG --as NAME --model NAME``: a compute party (or the 2pc dealer) answers
clients' private queries to a secret model in one long-lived session, batched
(``docs/serving.md``, "Service")."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from covault.cli.common import run_job, serving_config
from covault.exitcodes import EXIT_OK

ORDER = 77
HELP = "serve a secret model's private predictions to clients (every compute party and the dealer)"
DESCRIPTION = (
    "serve: every compute party of CONFIG (and the 2pc dealer) runs it (--as NAME); they load "
    "their shares of MODEL (--dir, default: models next to CONFIG), keep one mutually "
    "authenticated session and answer the clients' queries in batches; each compute party's "
    "front door listens on its address's port + 1 (covault predict, covault.serving.Client). "
    "--many: every data party of CONFIG may query, until SIGTERM or Ctrl-C; otherwise the client "
    "(--client, default: the only data party) and the service ends when it is done. A serving "
    "party that stops fails the pending queries; the others wait --rejoin seconds for it to "
    "come back. They learn each query's client and row count, never its rows or the answer."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", type=Path, help="consortium TOML config, or the job file that trained MODEL")
    p.add_argument("--as", dest="name", required=True, metavar="NAME", help="this party")
    p.add_argument("--model", required=True, metavar="MODEL", help="the secret model's name")
    p.add_argument(
        "--client", metavar="NAME", help="the client party (default: the config's only data party)"
    )
    p.add_argument(
        "--many", action="store_true", help="serve every data party of CONFIG until SIGTERM or Ctrl-C"
    )
    p.add_argument(
        "--rejoin",
        type=float,
        metavar="S",
        help="seconds to wait for a stopped serving party to come back (default: the config's timeout)",
    )
    p.add_argument("--max-rows", type=int, default=4096, metavar="N", help="rows of one batch (default 4096)")
    p.add_argument(
        "--share-wait",
        type=float,
        default=2.0,
        metavar="S",
        help="seconds a query may wait for its shares to reach every compute party before it fails "
        "(default 2; meanwhile the others' queries go on)",
    )
    p.add_argument(
        "--max-query-rows",
        type=int,
        default=65536,
        metavar="N",
        help="rows of one query; a larger one is refused to its client (default 65536)",
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
        help="one client: seconds to wait for its next query (default 86400)",
    )
    p.add_argument(
        "--transcript",
        type=Path,
        metavar="DIR",
        help="record every message this party sends in DIR/NAME.transcript",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object when the service ends")


def main(args: argparse.Namespace) -> int:
    prog = f"covault serve (party {args.name})"

    def body() -> int:
        from covault.serving.service import serve_party, start_signal_stop

        config, model_dir = serving_config(args.config)
        out = serve_party(
            config,
            args.name,
            args.model,
            client=args.client,
            many=args.many,
            model_dir=args.dir or model_dir,
            idle=args.idle,
            rejoin=args.rejoin,
            max_rows=args.max_rows,
            share_wait=args.share_wait,
            max_query_rows=args.max_query_rows,
            transcript_dir=args.transcript,
            stop=start_signal_stop(),
        )
        if args.json:
            print(json.dumps(out), flush=True)
        else:
            who = "its clients" if out["client"] is None else f"client {out['client']!r}"
            print(f"model {out['model']!r}: answered {out['queries']} queries of {who}")
        return EXIT_OK

    return run_job(prog, body)
