"""``covault run CONFIG SCRIPT.py``: every party of a consortium config on this machine."""

from __future__ import annotations

import argparse
from pathlib import Path

from covault.cli.common import run_options

ORDER = 90
HELP = "run every party of a config on this machine (loopback, fresh ports)"
DESCRIPTION = None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", type=Path, help="consortium TOML config")
    p.add_argument("script", type=Path, help="Python file defining main(session)")
    run_options(p)


def main(args: argparse.Namespace) -> int:
    from covault.launch.consortium import run_consortium

    return run_consortium(args.config, args.script, transcript=args.transcript, job=args.job)
