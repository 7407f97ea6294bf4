"""``covault audit verify|show|heads``: check a party's audit log, list its entries, export the
heads it countersigned (``docs/governance.md``)."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from covault.cli.common import run_job
from covault.exitcodes import EXIT_FAILED, EXIT_OK

ORDER = 65
HELP = "verify a party's audit log, list its entries, export the heads it countersigned"
DESCRIPTION = (
    "verify: check the chain, the signatures and the countersigned heads of party NAME's audit "
    "log (every log of the folder without --as) and name the first bad entry; the other logs of "
    "the folder and each --witness (another party's log, or a heads file from covault audit "
    "heads) are the others' copies of the heads. Exit status 0 good, 1 bad, 2 a log, the job "
    "file or the CA cannot be read. show: list the entries. heads: write the heads NAME "
    "countersigned for another party's auditor. The folder is the party's governance folder: "
    "--governance DIR, else as for covault approve JOB.toml (its local file's governance key, "
    "else the job's [tls] certs)."
)


def _common(p: argparse.ArgumentParser, *, party_required: bool) -> None:
    p.add_argument("job", type=Path, nargs="?", help="job TOML file: the folders are the job's")
    p.add_argument(
        "--as",
        dest="name",
        required=party_required,
        metavar="NAME",
        help="the party whose log it is" + ("" if party_required else " (default: every log of the folder)"),
    )
    p.add_argument("--local", type=Path, metavar="FILE", help="the party's local file (its governance key)")
    p.add_argument("--governance", type=Path, metavar="DIR", help="the governance folder holding the logs")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="audit_command", required=True)
    verify = sub.add_parser("verify", help="check chain, signatures and countersigned heads")
    _common(verify, party_required=False)
    verify.add_argument(
        "--ca", type=Path, metavar="FILE", help="the consortium CA certificate (default: DIR's ca.pem)"
    )
    verify.add_argument(
        "--witness",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="another party's audit log (.sqlite) or heads file (.json): its copies of the heads",
    )
    show = sub.add_parser("show", help="list a party's audit entries")
    _common(show, party_required=True)
    show.add_argument("--fingerprint", metavar="HEX", help="only entries about this job version (a prefix)")
    show.add_argument("--kind", metavar="KIND", help="only entries of this kind (proposed, approved, ...)")
    heads = sub.add_parser("heads", help="write the heads of other parties' logs that NAME countersigned")
    _common(heads, party_required=True)
    heads.add_argument("--out", type=Path, metavar="FILE", help="write to FILE (default: stdout)")


@dataclass(frozen=True)
class _Where:
    """The logs to read and the CA to check them against."""

    logs: list[Path]
    others: list[Path]  # the other logs of the folder (witnesses)
    ca: Path


def _where(args: argparse.Namespace) -> _Where:
    from covault.deploy.certs import CA_CERT
    from covault.governance.audit import audit_path
    from covault.governance.errors import GovernanceError

    if args.job is not None:
        from covault.jobs.approvals import party_folder
        from covault.jobs.spec import load_job

        job = load_job(args.job)
        names = [args.name] if args.name else list(job.config.names)
        folders = [party_folder(job, n, local=args.local, governance=args.governance) for n in names]
        logs = [f.audit_path for f in folders]
        if not args.name:
            logs = [p for p in logs if p.is_file()]
        ca = folders[0].keys / CA_CERT
    elif args.governance is not None:
        state = args.governance
        if args.name:
            logs = [audit_path(state, args.name)]
        else:
            logs = sorted(state.glob("*.audit.sqlite"))
        ca = state / CA_CERT
    else:
        raise GovernanceError("give the job file (JOB.toml) or the governance folder (--governance DIR)")
    if not logs:
        raise GovernanceError("no audit log found (a party's log is DIR/NAME.audit.sqlite)")
    for p in logs:
        if not p.is_file():
            raise GovernanceError(f"audit log {p} not found")
    folders_ = {p.parent for p in logs}
    others = sorted({o for d in folders_ for o in d.glob("*.audit.sqlite")} - set(logs))
    return _Where(logs, others, ca)


def main(args: argparse.Namespace) -> int:
    prog = f"covault audit {args.audit_command}"
    body = {"verify": _verify, "show": _show, "heads": _heads}[args.audit_command]
    return run_job(prog, lambda: body(args))


def _verify(args: argparse.Namespace) -> int:
    from covault.deploy.certs import load_certificate
    from covault.jobs.approvals import verify

    where = _where(args)
    ca = load_certificate(args.ca or where.ca, "the consortium CA")
    reports = verify(where.logs, ca, witnesses=[*where.others, *args.witness])
    ok = all(r.ok for r in reports)
    if args.json:
        print(json.dumps({"ok": ok, "logs": [r.to_json() for r in reports]}, sort_keys=True), flush=True)
    else:
        for r in reports:
            more = len(r.findings) - 1
            tail = f" (and {more} more finding{'s' * (more > 1)}: --json lists them)" if more > 0 else ""
            print(r.summary() + tail, flush=True)
    return EXIT_OK if ok else EXIT_FAILED


def _show(args: argparse.Namespace) -> int:
    from covault.governance.audit import AuditLog

    (path,) = _where(args).logs
    with AuditLog(path, args.name, readonly=True) as log:
        entries = [
            e
            for e in log.entries()
            if (args.kind is None or e.kind == args.kind)
            and (args.fingerprint is None or (e.fingerprint or "").startswith(args.fingerprint))
        ]
    if args.json:
        doc = {"party": args.name, "path": str(path), "entries": [e.to_json() for e in entries]}
        print(json.dumps(doc, sort_keys=True), flush=True)
        return EXIT_OK
    print(f"audit log of {args.name}: {path}, {len(entries)} entries shown")
    for e in entries:
        fp = (e.fingerprint or "-")[:12]
        print(f"{e.seq:>5}  {e.time[:19]}  {e.kind:<14} {fp:<12}  {_brief(e.kind, e.data)}")
    return EXIT_OK


def _brief(kind: str, data) -> str:
    """One line about an entry's payload; its JSON text where it does not have the shape its
    kind has (a tampered entry: ``covault audit verify`` names it)."""
    if not isinstance(data, dict):
        return "(payload is not JSON)"
    try:
        return _described(kind, data)
    except (AttributeError, TypeError, ValueError, KeyError):
        return _json_line(data)


def _json_line(data) -> str:
    text = json.dumps(data, sort_keys=True)
    return text if len(text) <= 160 else text[:157] + "..."


def _described(kind: str, data: dict) -> str:
    """One line about a payload of ``kind`` (errors if it lacks that kind's shape)."""
    if kind in ("proposed", "approved", "rejected"):
        why = f": {data['reason']}" if kind == "rejected" and data.get("reason") else ""
        return f"job {data.get('job')!r}{why}"
    if kind == "failed":
        return f"{data.get('type')}: {data.get('error')}"
    if kind == "input":
        rows = f"{data.get('train_rows')} training and {data.get('test_rows')} held-out rows"
        return f"table sha256 {str(data.get('table_sha256'))[:16]}..., {rows}"
    if kind == "traffic":
        peers = data.get("peers") or {}
        return "; ".join(f"to {p}: {v.get('bytes_sent')} bytes" for p, v in peers.items())
    if kind == "revealed":
        return "; ".join(f"{r.get('what')} -> {r.get('to')}" for r in data.get("reveals") or [])[:160]
    if kind == "started":
        return f"approvals of {', '.join(data.get('approvals') or {})} checked"
    if kind == "policy":
        cols = ", ".join(f"{c.get('column')} {c.get('verdict')}" for c in data.get("columns") or [])
        return f"{data.get('policy')}: {cols}"[:160]
    if kind == "finished":
        model = data.get("model_sha256")
        return f"{data.get('seconds', 0):.2f} s" + (f", model sha256 {model[:16]}..." if model else "")
    if kind == "countersigned":
        return f"head at entry {data.get('seq')} countersigned by {', '.join(data.get('witnesses') or [])}"
    return _json_line(data)


def _heads(args: argparse.Namespace) -> int:
    from covault.governance.verify import export_heads

    (path,) = _where(args).logs
    text = json.dumps(export_heads(path), indent=1, sort_keys=True) + "\n"
    if args.out is None:
        print(text, end="", flush=True)
    else:
        args.out.write_text(text, encoding="utf-8")
        print(f"covault audit heads: {args.out}: the heads {args.name} countersigned", flush=True)
    return EXIT_OK
