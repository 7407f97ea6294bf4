"""``covault certs init|issue``: the consortium CA and party certificates."""

from __future__ import annotations

import argparse
from pathlib import Path

from covault.cli.common import error
from covault.exitcodes import EXIT_OK, EXIT_USAGE

ORDER = 70
HELP = "consortium CA and party certificates"
DESCRIPTION = None


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="certs_command", required=True)
    init = sub.add_parser("init", help="create the consortium CA in DIR (ca.pem, ca.key)")
    init.add_argument("dir", type=Path)
    init.add_argument("--days", type=int, default=365, help="validity in days (default 365)")
    issue = sub.add_parser("issue", help="create DIR/NAME.key and DIR/NAME.pem signed by the CA in DIR")
    issue.add_argument("dir", type=Path)
    issue.add_argument("name")
    issue.add_argument("--days", type=int, default=365, help="validity in days (default 365)")


def main(args: argparse.Namespace) -> int:
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
        error(f"covault certs {args.certs_command}", exc)
        return EXIT_USAGE
    return EXIT_OK
