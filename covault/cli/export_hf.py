"""``covault export-hf MODEL_DIR [--out DIR]``: a jointly trained model as a Hugging Face folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from covault.exitcodes import EXIT_OK

ORDER = 35
HELP = "write a received model as a Hugging Face folder: safetensors weights, config and model card"
DESCRIPTION = (
    "Read MODEL_DIR/result.json (covault train JOB --json > MODEL_DIR/result.json, at a party that "
    "received the model) and write a Hugging Face model folder: model.safetensors, model.onnx, "
    "config.json and a README.md model card stating the data parties, protocol, threat model, "
    "metrics and privacy guarantee. Nothing is uploaded (docs/mlops.md)."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dir", type=Path, metavar="MODEL_DIR", help="folder with result.json (or the file)")
    p.add_argument("--out", type=Path, metavar="DIR", help="the folder to write (default MODEL_DIR/hf)")


def main(args: argparse.Namespace) -> int:
    from covault.cli.common import run_job

    def body() -> int:
        from covault.jobs.errors import JobError

        try:
            from covault.mlops.hf_export import export_hf
        except ImportError as exc:
            raise JobError(
                f"covault export-hf: {exc.name} is missing: pip install 'covault[mlops]'"
            ) from None
        folder = export_hf(args.model_dir, args.out)
        print(
            f"Hugging Face folder: {folder.resolve()} (model.safetensors, model.onnx, config.json, README.md)"
        )
        return EXIT_OK

    return run_job("covault export-hf", body)
