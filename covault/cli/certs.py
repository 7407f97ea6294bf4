"""``covault certs init|request|sign|revoke|crl|issue``: the consortium CA, each party's own key
and certificate, and revocation."""

from __future__ import annotations

import argparse
from pathlib import Path

from covault.cli.common import error
from covault.exitcodes import EXIT_OK, EXIT_USAGE

ORDER = 70
HELP = "consortium CA, party keys and certificates, revocation"
DESCRIPTION = (
    "A consortium: the CA operator runs 'init'; each party runs 'request' on its own host and sends "
    "only NAME.csr to the CA; the CA runs 'sign' and sends NAME.pem back with ca.pem; 'revoke' "
    "writes the revocation list (revoked.crl.pem) that every party keeps beside ca.pem. 'issue' "
    "creates every party's key at one desk: for local tests only."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="certs_command", required=True)
    init = sub.add_parser("init", help="create the consortium CA in DIR (ca.pem, ca.key)")
    init.add_argument("dir", type=Path)
    init.add_argument("--days", type=int, default=365, help="validity in days (default 365)")
    req = sub.add_parser(
        "request",
        help="on a party's own host: create DIR/NAME.key (mode 0600, never overwritten) and DIR/NAME.csr",
    )
    req.add_argument("dir", type=Path)
    req.add_argument("name")
    req.add_argument(
        "--reuse-key",
        action="store_true",
        help="request a certificate for the existing DIR/NAME.key (renewal)",
    )
    sign = sub.add_parser("sign", help="at the CA: sign a party's NAME.csr (writes NAME.pem beside it)")
    sign.add_argument("ca_dir", type=Path)
    sign.add_argument("csr", type=Path)
    sign.add_argument("--days", type=int, required=True, help="validity in days (required)")
    sign.add_argument(
        "--out", type=Path, help="write the certificate here (default: NAME.pem beside the CSR)"
    )
    sign.add_argument("--name", help="the party the request must name (default: the CSR's file name)")
    sign.add_argument(
        "--renew",
        action="store_true",
        help="sign although the party has a valid certificate (which stays valid until it expires or is revoked)",
    )
    rev = sub.add_parser(
        "revoke", help="at the CA: revoke a party's certificates and write CA_DIR/revoked.crl.pem"
    )
    rev.add_argument("ca_dir", type=Path)
    rev.add_argument(
        "target", nargs="?", help="a party name (all its valid certificates) or a certificate file"
    )
    rev.add_argument("--serial", help="revoke the certificate with this serial (hex)")
    rev.add_argument(
        "--reason", default="unspecified", help="key_compromise, superseded, ... (default unspecified)"
    )
    rev.add_argument("--days", type=int, help="the list's validity: next update due in N days (default 30)")
    crl = sub.add_parser(
        "crl", help="at the CA: write a fresh CA_DIR/revoked.crl.pem (before the old one is due)"
    )
    crl.add_argument("ca_dir", type=Path)
    crl.add_argument("--days", type=int, help="the list's validity: next update due in N days (default 30)")
    issue = sub.add_parser(
        "issue",
        help="for local tests only: create DIR/NAME.key and DIR/NAME.pem at the CA (every key at one desk)",
    )
    issue.add_argument("dir", type=Path)
    issue.add_argument("name")
    issue.add_argument("--days", type=int, default=365, help="validity in days (default 365)")


def _revoke(args: argparse.Namespace) -> None:
    from covault.deploy import revocation

    target, cert = args.target, None
    if target is not None and target.endswith(".pem"):
        target, cert = None, args.target
    if (target is None) == (args.serial is None) and cert is None:
        raise revocation.CertificateError("give a party name, a certificate file or --serial S (one of them)")
    days = revocation.CRL_DAYS if args.days is None else args.days
    path, done = revocation.revoke(
        args.ca_dir, party=target, serial=args.serial, cert=cert, reason=args.reason, days=days
    )
    for e in done:
        print(f"revoked: party {e.party!r}, serial {e.serial} (reason: {e.reason})")
    print(f"revocation list: {path}, next update due in {days} days (copy it beside ca.pem at every party)")


def main(args: argparse.Namespace) -> int:
    from covault.deploy import certs, csr, issued, revocation

    cmd = args.certs_command
    try:
        if cmd == "init":
            path = certs.init_ca(args.dir, days=args.days)
            print(f"consortium CA: {path} (keep {args.dir / certs.CA_KEY} offline: it issues identities)")
        elif cmd == "request":
            request, key = csr.request(args.dir, args.name, reuse_key=args.reuse_key)
            print(f"party {args.name!r}: key {key} (mode 0600; it never leaves this host)")
            print(f"request: {request} (send it to the consortium CA)")
        elif cmd == "sign":
            done = csr.sign(
                args.ca_dir, args.csr, days=args.days, out=args.out, name=args.name, renew=args.renew
            )
            print(
                f"party {done.party!r}: certificate {done.path}, serial {done.serial:x}, valid {args.days} days "
                f"(until {done.not_after:%Y-%m-%d %H:%M} UTC); send it with {args.ca_dir / certs.CA_CERT} to that party"
            )
            if done.still_valid:
                print(
                    f"still valid: its earlier certificate(s) {', '.join(done.still_valid)} "
                    f"(covault certs revoke {args.ca_dir} --serial S to end one)"
                )
        elif cmd == "revoke":
            _revoke(args)
        elif cmd == "crl":
            days = revocation.CRL_DAYS if args.days is None else args.days
            path = revocation.write_crl(args.ca_dir, days=days)
            print(
                f"revocation list: {path}, next update due in {days} days (copy it beside ca.pem at every party)"
            )
        else:
            cert, key = certs.issue(args.dir, args.name, days=args.days)
            issued.record(args.dir, certs.load_certificate(cert, f"party {args.name!r}"))
            print(
                f"party {args.name!r}: certificate {cert}, key {key} (for local tests only: this desk holds "
                "every party's key; a consortium uses 'covault certs request' and 'sign')"
            )
    except (certs.CertificateError, OSError) as exc:
        error(f"covault certs {cmd}", exc)
        return EXIT_USAGE
    return EXIT_OK
