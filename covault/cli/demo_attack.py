"""``covault demo --attack``: what an aggregator recovers from a federated update of digit
images, and what the same attacker recovers from one compute party's view when covault trains
the same images under MPC; with secure aggregation over more clients and with DP noise.

Not a command of its own (no ``HELP``): :mod:`covault.cli.demo` adds these options and hands
over when ``--attack`` is given.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from covault.exitcodes import EXIT_OK

PROG = "covault demo --attack"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from covault.cli.common import positive_int

    g = p.add_argument_group("gradient-inversion evidence (--attack)")
    g.add_argument(
        "--attack",
        action="store_true",
        help="invert federated updates of digit images (analytic, DLG), then attack one compute "
        "party's view of the same training under covault; secure aggregation and DP",
    )
    g.add_argument(
        "--attack-images",
        type=positive_int,
        default=4,
        metavar="N",
        help="--attack: images per update (default 4)",
    )


def main(args: argparse.Namespace) -> int:
    from covault.cli.common import run_job

    def body() -> int:
        import json

        from covault.jobs.report import json_safe, render_sections_html
        from covault.privacy.attacks import figures
        from covault.privacy.attacks.evidence import Options, run

        opts = Options(images=args.attack_images, protocol=args.protocol, transport=args.transport)
        if not (args.quiet or args.json):
            print(f"{PROG}: three experiments on scikit-learn's digits (about a minute)", file=sys.stderr)
        result = json_safe(run(opts))
        png = figures.grid_png(opts.pictures)
        report = args.report or (args.out / "report.html" if args.out else Path("covault-attack-report.html"))
        intro = (
            "An honest-but-curious aggregator inverts a client's federated update of digit images; the "
            "same attacker reads every byte one covault compute party received while training on the "
            "same images under MPC; then secure aggregation over N clients and DP-SGD noise."
        )
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(
            render_sections_html(
                "Gradient inversion: the evidence", intro, figures.html_sections(result, png)
            ),
            encoding="utf-8",
        )
        if args.out:
            (args.out / "attack.png").write_bytes(png)
            (args.out / "attack.json").write_text(json.dumps(result, indent=1, allow_nan=False) + "\n")
        if args.json:
            print(f"{PROG}: report written to {report}", file=sys.stderr, flush=True)
            print(json.dumps(result, allow_nan=False), flush=True)
        else:
            print(figures.format_text(result))
            print(f"report: {report.resolve()}", flush=True)
        return EXIT_OK

    return run_job(PROG, body)
