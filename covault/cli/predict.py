"""``covault predict CONFIG --as NAME --model NAME --input rows.csv``: a client's private query
to a secret model served by ``covault serve`` (``docs/serving.md``, "Service")."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from covault.cli.common import run_job, serving_config
from covault.exitcodes import EXIT_OK

ORDER = 78
HELP = "query a served secret model with this client's rows; only this party sees the answer"
DESCRIPTION = (
    "predict: the client, a data party of CONFIG (--as NAME), secret-shares the rows of --input "
    "with the parties running covault serve for MODEL and alone receives the answer: one line per "
    "row (--json: one JSON object). --input is a CSV whose header names the raw columns of the "
    "model's job (they go through the job's transforms here, as in training; docs/serving.md, "
    "Queries in raw columns), or numbers only for a model that takes its raw number columns as "
    "they are (a model that names no columns, such as an imported one, reads numbers, a header "
    "line skipped); --prepared: the rows already are the model's inputs."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", type=Path, help="consortium TOML config, or the job file that trained MODEL")
    p.add_argument("--as", dest="name", required=True, metavar="NAME", help="this client party")
    p.add_argument("--model", required=True, metavar="MODEL", help="the secret model's name")
    p.add_argument(
        "--input", required=True, type=Path, metavar="CSV", help="the rows: a header naming the raw columns"
    )
    p.add_argument(
        "--prepared",
        action="store_true",
        help="the rows already are the model's inputs (after its transforms)",
    )
    p.add_argument("--json", action="store_true", help='print {"model", "rows", "predictions"}')


def query_rows(path: Path, by_name: bool) -> Path | list[list[float]]:
    """What ``Client.predict`` takes for the CSV ``path``: the file itself where its first line
    names columns and the model names its inputs (``by_name``: read by name), else its rows of
    numbers (a header line skipped)."""
    if by_name:
        with path.open(newline="") as f:
            first = next((r for r in csv.reader(f) if r), None)
        try:
            [float(v) for v in first or ()]
        except ValueError:
            return path
    return read_rows(path)


def read_rows(path: Path) -> list[list[float]]:
    """The numeric rows of a CSV file; a first line that is not numeric is a header. ValueError
    naming the file and line otherwise."""
    with path.open(newline="") as f:
        lines = [r for r in csv.reader(f) if r]
    rows = []
    for i, line in enumerate(lines, 1):
        try:
            rows.append([float(v) for v in line])
        except ValueError:
            if i == 1:
                continue
            raise ValueError(f"{path}, line {i}: not a row of numbers") from None
    if not rows:
        raise ValueError(f"{path}: no rows")
    return rows


def main(args: argparse.Namespace) -> int:
    prog = f"covault predict (party {args.name})"

    def body() -> int:
        from covault.ingest.errors import DataError
        from covault.serving.client import Client

        with Client(serving_config(args.config)[0], as_=args.name, model=args.model) as client:
            info = client.model.info
            try:
                rows = query_rows(args.input, bool(info.get("model_inputs") or info.get("preprocessing")))
            except ValueError as exc:
                raise DataError(str(exc)) from None
            out = client.predict(rows, prepared=args.prepared)
        if args.json:
            print(
                json.dumps({"model": args.model, "rows": len(out), "predictions": out.tolist()}), flush=True
            )
        else:
            for row in out.reshape(len(out), -1):
                print(",".join(f"{v:.6g}" for v in row))
        sys.stdout.flush()
        return EXIT_OK

    return run_job(prog, body)
