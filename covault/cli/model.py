"""``covault model import [FILE] --owner NAME --as NAME CONFIG``: secret-share a plaintext model
held by one party; every compute party stores its shares, encrypted at rest (``docs/serving.md``)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from covault.cli.common import run_job
from covault.exitcodes import EXIT_OK, EXIT_USAGE

ORDER = 75
HELP = "import a plaintext model (ONNX, PyTorch, safetensors) as secret shares at the compute parties"
DESCRIPTION = (
    "import: every party of CONFIG runs it (--as NAME); the owner (--owner) passes FILE (.onnx, a "
    "torch.save'd nn.Sequential .pt/.pth, or .safetensors with --layers), secret-shares its weights, "
    "and each compute party stores its shares in DIR/MODEL.PARTY.shares (--dir, default: models next "
    "to CONFIG), encrypted under its key PARTY.store.key in the config's [tls] certs folder (else "
    "DIR/keys). No party but the owner sees a weight. --answer decision (the owner's policy, "
    "stored in the model's authenticated header): clients receive only the class (probability > "
    "--threshold, default 0.5, or the argmax of several classes), never the probabilities."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="model_command", required=True)
    imp = sub.add_parser("import", help="secret-share a plaintext model held by one party")
    imp.add_argument("file", type=Path, nargs="?", help="the model file (the owner only)")
    imp.add_argument("config", type=Path, help="consortium TOML config")
    imp.add_argument("--owner", required=True, metavar="NAME", help="the party that holds the model")
    imp.add_argument("--as", dest="name", required=True, metavar="NAME", help="this party")
    imp.add_argument("--name", dest="model", metavar="MODEL", help="the model's name (default: FILE's stem)")
    imp.add_argument(
        "--layers",
        metavar="LIST",
        help="safetensors: e.g. 'fc1,relu,fc2,softmax' (fc1.weight, fc1.bias, ...)",
    )
    imp.add_argument(
        "--dir", type=Path, metavar="DIR", help="the model folder (default: models next to CONFIG)"
    )
    imp.add_argument(
        "--answer",
        choices=("scores", "decision"),
        help="the owner's policy: what clients receive (default scores: the probabilities); "
        "another party passing it checks the owner's",
    )
    imp.add_argument(
        "--threshold",
        type=float,
        metavar="T",
        help="--answer decision on one probability: class 1 where it exceeds T (default 0.5)",
    )
    imp.add_argument("--json", action="store_true", help="print one JSON object")


def main(args: argparse.Namespace) -> int:
    prog = f"covault model import (party {args.name})"
    if args.name == args.owner and args.file is None:
        print(f"{prog}: error: the owner {args.owner!r} passes the model FILE", file=sys.stderr)
        return EXIT_USAGE
    if args.name != args.owner and args.file is not None:
        print(f"{prog}: error: only the owner {args.owner!r} passes a model FILE", file=sys.stderr)
        return EXIT_USAGE
    if args.threshold is not None and args.answer != "decision":
        print(f"{prog}: error: --threshold applies to --answer decision only", file=sys.stderr)
        return EXIT_USAGE

    def body() -> int:
        from covault.deploy.config import load_config
        from covault.runtime import run_party
        from covault.serving.formats import read_model
        from covault.serving.importer import import_model
        from covault.serving.keys import store_folders

        config = load_config(args.config)
        folder, keys = store_folders(config, args.dir)
        plain, name, read = None, args.model, 0.0
        if args.file is not None:
            t0 = time.perf_counter()
            plain = read_model(args.file, args.layers)
            read = time.perf_counter() - t0
            name = name or args.file.stem

        def program(session):
            return import_model(
                session, args.owner, plain, folder, keys, name=name, info={"source": "import"},
                answer=args.answer, threshold=args.threshold,
            )  # fmt: skip

        out = run_party(config, args.name, program, job="covault model import")
        out = {"party": args.name, **out, "read_seconds": read}
        answer = out["answer"]
        said = answer["output"] + (
            f" at probability {answer['threshold']:g}" if "threshold" in answer else ""
        )
        if args.json:
            print(json.dumps(out), flush=True)
        elif out["path"]:
            print(
                f"model {out['model']!r} (answers: {said}): this party's shares ({out['bytes']} bytes) "
                f"in {out['path']}"
            )
        else:
            print(f"model {out['model']!r} imported (answers: {said}; this party holds no shares)")
        return EXIT_OK

    return run_job(prog, body)
