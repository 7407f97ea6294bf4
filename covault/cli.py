"""Command-line interface: ``covault demo``."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="covault", description="Secure multi-party computation.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the engine showcase: hospitals pool statistics under MPC")
    demo.add_argument("--protocol", choices=["rep3", "2pc", "both"], default="both")
    demo.add_argument("--transport", choices=["tcp", "local"], default="tcp")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from covault import showcase

        protocols = ("rep3", "2pc") if args.protocol == "both" else (args.protocol,)
        return showcase.main(protocols, args.transport)
    return 2


if __name__ == "__main__":
    sys.exit(main())
