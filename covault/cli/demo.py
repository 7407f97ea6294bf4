"""``covault demo``: three hospitals train a breast-cancer classifier jointly under MPC."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

from covault import schemes
from covault.cli.common import output_options, positive_int, print_result, progress, run_job
from covault.cli.tracking import log_tracking, tracking_options
from covault.exitcodes import EXIT_OK

ORDER = 10
HELP = "three hospitals train a breast-cancer classifier jointly under MPC (real processes, TLS)"
DESCRIPTION = (
    "Three hospitals each hold part of scikit-learn's Wisconsin breast-cancer data and train "
    "logistic regression jointly under MPC, one OS process per hospital over mutual TLS; the "
    "result is compared with the same model trained centrally on the pooled rows, and an HTML "
    "report (loss curve, metrics, traffic) is written."
)
HOSPITALS = ("hospital_a", "hospital_b", "hospital_c")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from covault.randomness.providers import PROVIDERS

    p.add_argument("--protocol", choices=schemes.names(), default=schemes.DEFAULT)
    p.add_argument(
        "--provider",
        choices=sorted(PROVIDERS),
        help="2pc's correlation provider (default: dealer); 'ot': the two hospitals that compute "
        "hold all the data and make every correlation by oblivious transfer (two processes, no dealer)",
    )
    p.add_argument("--transport", choices=["tcp", "local"], default="tcp")
    p.add_argument("--epochs", type=positive_int, default=10, help="training epochs (default 10)")
    p.add_argument(
        "--vertical",
        action="store_true",
        help="split the columns instead of the patients (rows matched by private set intersection)",
    )
    p.add_argument(
        "--banks",
        action="store_true",
        help="five banks train a fraud model from raw tables (CSV, Parquet, SQLite) under their policies",
    )
    p.add_argument("--rows", type=positive_int, default=2000, help="--banks: rows per bank (default 2000)")
    p.add_argument(
        "--out", type=Path, metavar="DIR", help="write the job, data, model and report.html into DIR"
    )
    p.add_argument(
        "--report",
        type=Path,
        metavar="FILE",
        help="HTML report path (default: DIR/report.html with --out, else ./covault-demo-report.html)",
    )
    output_options(p)
    tracking_options(p)
    from covault.cli import demo_federated

    demo_federated.add_arguments(p)
    from covault.cli import demo_attack

    demo_attack.add_arguments(p)


def main(args: argparse.Namespace) -> int:
    import tempfile

    if args.federated:
        from covault.cli import demo_federated

        return demo_federated.main(args)
    if args.attack:
        from covault.cli import demo_attack

        return demo_attack.main(args)

    from covault.deploy.config import ConfigError
    from covault.jobs.demo import make_breast_cancer_job
    from covault.jobs.local import run_local

    def body() -> int:
        with contextlib.ExitStack() as stack:
            where = args.out or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="covault-demo-")))
            if args.banks:
                from covault.jobs.banks import make_bank_job

                if args.vertical:
                    raise ConfigError("--banks and --vertical: the bank demo is horizontal")
                path = make_bank_job(where, args.rows, protocol=args.protocol, epochs=args.epochs)
            else:
                if args.provider is not None and args.vertical:
                    raise ConfigError(
                        "--provider and --vertical: the vertical demo runs with the default provider"
                    )
                path = make_breast_cancer_job(
                    where,
                    hospitals(args),
                    args.protocol,
                    vertical=args.vertical,
                    epochs=args.epochs,
                    provider=args.provider,
                )
            if not args.json:
                print(intro(args), flush=True)
            result = run_local(
                path, transport=args.transport, compare_plaintext=True, progress=progress(args)
            )
            extra = []
            if args.out is None:
                result["model_out"] = None  # in the temporary folder, removed below
                extra.append("(the job's files and model were in a temporary folder; --out DIR keeps them)")
            else:
                extra.append(f"job file, data and model: {path.parent.resolve()}")
            if args.report is None:
                args.report = where / "report.html" if args.out else Path("covault-demo-report.html")
            print_result(result, args, "covault demo", extra)
            log_tracking(args, path, result, "covault demo")
        return EXIT_OK

    return run_job("covault demo", body)


def hospitals(args: argparse.Namespace) -> int:
    """How many hospitals take part: three, or only the compute parties where a provider that
    needs no dealer is named (the computation then runs in their processes alone)."""
    from covault.randomness.providers import needs_dealer

    provider = getattr(args, "provider", None)
    if provider is not None and not needs_dealer(args.protocol, provider):
        return schemes.get(args.protocol).parties
    return len(HOSPITALS)


def intro(args: argparse.Namespace) -> str:
    """The paragraph the demo starts with: who holds what, who computes, how."""
    import textwrap

    from covault.randomness.providers import needs_dealer

    n = schemes.get(args.protocol).parties
    if getattr(args, "banks", False):
        from covault.jobs.banks import BANKS

        text = (
            "covault demo --banks: five banks hold raw transaction tables (CSV, Parquet, SQLite) with "
            "names, e-mails, IBANs, account ids, amounts in the millions, text categories and missing "
            "cells, each in its own column order, and a policy file each. They train a fraud "
            f"classifier under MPC ({args.protocol}; {', '.join(BANKS[:n])} compute, "
            f"{'one OS process each over mutual TLS' if args.transport == 'tcp' else 'as threads'}); "
            "each bank's policy is enforced before anything leaves it. Baseline: the same model and "
            "scikit-learn's, trained centrally on the same transformed rows."
        )
        return textwrap.fill(text, width=100)
    present = HOSPITALS[: hospitals(args)]
    provider = getattr(args, "provider", None)
    proto = f"{args.protocol} secret sharing " + (
        f"between {' and '.join(present[:n])}"
        if present[n:] or len(present) == 2
        else "among the three hospitals"
    )
    proto += " with a dealer" if needs_dealer(args.protocol, provider) else ""
    if provider is not None and not needs_dealer(args.protocol, provider):
        from covault.randomness.providers import PROVIDERS

        proto += f" (provider {provider!r}: {PROVIDERS[provider].description})"
    proto += f" ({', '.join(present[n:])} brings data)" if present[n:] else ""
    how = "one OS process each, over mutual TLS" if args.transport == "tcp" else "as threads of this process"
    if args.vertical:
        split = (
            "hold different measurements of the same 569 patients of the Wisconsin breast-cancer data "
            "(the mean / error / worst features; the diagnosis at hospital_a); each lacks some patients, "
            "and the rows are matched by private set intersection on patient_id"
        )
    else:
        split = "each hold some of the 569 patients of the Wisconsin breast-cancer data (30 features)"
    epochs = f"{args.epochs} epoch{'s' if args.epochs != 1 else ''}"
    text = (
        f"covault demo: {'two' if len(present) == 2 else 'three'} hospitals {split}. They train logistic regression ({epochs}) together "
        f"under MPC: {proto}, {how}. No hospital sees another's records. Baseline: the same model "
        "trained centrally on the pooled rows."
    )
    return textwrap.fill(text, width=100)
