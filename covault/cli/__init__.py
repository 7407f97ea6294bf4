"""Command-line interface: one module per command, found by convention (:func:`commands`).

    covault demo [--protocol P] [--vertical] [--out DIR]   hospitals train a breast-cancer model jointly
    covault train JOB.toml [--json] [--compare-plaintext]  every party of a job on this machine
    covault party JOB.toml --as NAME [--local F]           one party of a job, on its own host (approved)
    covault plan JOB.toml --as NAME [--local F]            dry run: what the party would send and learn
    covault approve JOB.toml --as NAME [--yes]             sign a party's approval of a job's fingerprint
    covault reject JOB.toml --as NAME [--reason TEXT]      sign a party's rejection of a job
    covault audit verify|show|heads [JOB.toml] --as NAME   check a party's audit log, list it, export heads
    covault console --as NAME --jobs DIR [--local F]       a party's operator console on localhost (token)
    covault export-hf MODEL_DIR [--out DIR]                a received model as a Hugging Face folder (card)
    covault showcase                                       engine tour: pooled statistics under MPC
    covault certs init DIR [--days N]                      consortium CA (DIR/ca.pem, DIR/ca.key)
    covault certs request DIR NAME [--reuse-key]           on the party's host: DIR/NAME.key (0600), DIR/NAME.csr
    covault certs sign CA_DIR NAME.csr --days N [--renew]  at the CA: NAME.pem beside the request
    covault certs revoke CA_DIR NAME|CERT.pem|--serial S   at the CA: CA_DIR/revoked.crl.pem [--reason R]
    covault certs crl CA_DIR [--days N]                    at the CA: a fresh revocation list
    covault certs issue DIR NAME [--days N]                local tests only: every party's key at one desk
    covault serve CONFIG --as NAME --model M [--dir DIR]   a compute party (or the dealer) serves a secret model
    covault predict CONFIG --as NAME --model M --input F   the client's private query: rows.csv in, its answer out
    covault gateway CONFIG --as NAME --model M [--port P]  the client's HTTP gateway on loopback (POST JSON rows)
    covault party CONFIG --as NAME SCRIPT.py               one party of a consortium, running a script
    covault run CONFIG SCRIPT.py                           every party of CONFIG on this machine

A command module ``covault/cli/NAME.py`` (``_`` in NAME is ``-`` in the command) defines
``HELP``, ``DESCRIPTION`` (None: the help), ``ORDER`` (its place in ``covault --help``),
``add_arguments(parser)`` and ``main(args) -> int``; it imports what the command needs inside
``main``, so ``covault --help`` and every command start fast. A module without ``HELP``
(``common.py``) is not a command.

A job file (``docs/jobs.md``) is a consortium config with a ``task``. ``SCRIPT.py`` defines
``main(session)``; every party runs it (SPMD) and prints its return value. ``--json`` prints one
JSON object as the last line of stdout. Exit status: 0 success, 1 the computation failed (here
or at a peer), 2 bad command line, config, job, data, certificate or script, 130 interrupted,
143 terminated.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from types import ModuleType


def _command(name: str) -> ModuleType:
    return importlib.import_module(f"covault.cli.{name.replace('-', '_')}")


def commands() -> list[str]:
    """The command names: the modules of this package that define ``HELP``, by ``ORDER``."""
    found = []
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        module = _command(info.name)
        if hasattr(module, "HELP"):
            found.append((getattr(module, "ORDER", 100), info.name))
    return [name.replace("_", "-") for _, name in sorted(found)]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="covault", description="Secure multi-party computation.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in commands():
        module = _command(name)
        module.add_arguments(sub.add_parser(name, help=module.HELP, description=module.DESCRIPTION))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command of ``argv`` (default: ``sys.argv[1:]``); its exit status."""
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    module = _command(args.command)
    fix = getattr(module, "fix_arguments", None)
    if fix is not None:
        extra = fix(args, extra)
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return module.main(args)


if __name__ == "__main__":
    sys.exit(main())
