"""Command-line interface: one module per command, found by name in :data:`COMMANDS`.

    covault demo [--protocol P] [--vertical] [--out DIR]   hospitals train a breast-cancer model jointly
    covault train JOB.toml [--json] [--compare-plaintext]  every party of a job on this machine
    covault party JOB.toml --as NAME [--local F]           one party of a job, on its own host
    covault plan JOB.toml --as NAME [--local F]            dry run: what the party would send and learn
    covault showcase                                       engine tour: pooled statistics under MPC
    covault certs init DIR [--days N]                      consortium CA (DIR/ca.pem, DIR/ca.key)
    covault certs issue DIR NAME [--days N]                party key and certificate (DIR/NAME.key, .pem)
    covault party CONFIG --as NAME SCRIPT.py               one party of a consortium, running a script
    covault run CONFIG SCRIPT.py                           every party of CONFIG on this machine

A command module ``covault/cli/NAME.py`` defines ``HELP``, ``DESCRIPTION`` (None: the help),
``add_arguments(parser)`` and ``main(args) -> int``; it imports what the command needs inside
``main``, so ``covault --help`` and every command start fast.

A job file (``docs/jobs.md``) is a consortium config with a ``task``. ``SCRIPT.py`` defines
``main(session)``; every party runs it (SPMD) and prints its return value. ``--json`` prints one
JSON object as the last line of stdout. Exit status: 0 success, 1 the computation failed (here
or at a peer), 2 bad command line, config, job, data, certificate or script, 130 interrupted,
143 terminated.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from types import ModuleType

COMMANDS = ("demo", "showcase", "train", "plan", "certs", "party", "run")


def _command(name: str) -> ModuleType:
    return importlib.import_module(f"covault.cli.{name}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="covault", description="Secure multi-party computation.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
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
