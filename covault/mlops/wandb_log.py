"""``covault train JOB --wandb [DIR]``: one Weights & Biases run per party, offline.

Runs are written under ``DIR/wandb/`` in W&B's offline mode (no account, no network;
``wandb sync DIR/wandb/offline-run-*`` uploads them later, if the party wishes). The content is
:mod:`~covault.mlops.mlflow_log`'s: the config holds the parameters and the ``covault.*``
privacy tags, ``loss`` is logged per epoch (step = epoch), the held-out metrics are in the
summary, and a receiver's run holds the ONNX model and the HTML report as a ``model``
artifact. Other parties log the config, tags and their own traffic only.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from covault.mlops.content import party_views

DEFAULT_DIR = "./wandb-runs"


def log_to_wandb(
    job: Any,
    result: dict[str, Any],
    directory: str | Path = DEFAULT_DIR,
    *,
    project: str | None = None,
    report: str | Path | None = None,
) -> dict[str, Path]:
    """Log ``result`` of ``job`` offline under ``directory``; ``{party: offline run folder}``."""
    os.environ["WANDB_MODE"] = "offline"
    os.environ.setdefault("WANDB_SILENT", "true")
    import wandb

    folder = Path(directory).expanduser().absolute()
    folder.mkdir(parents=True, exist_ok=True)
    runs: dict[str, Path] = {}
    with tempfile.TemporaryDirectory(prefix="covault-wandb-") as tmp:
        files: dict[str, Path] | None = None
        for view in party_views(job, result):
            config = {**view.params, **view.tags}
            run = wandb.init(
                project=project or f"covault-{job.name}",
                name=f"{job.name} @ {view.party}",
                dir=str(folder),
                mode="offline",
                config=config,
                tags=["covault", job.protocol, *view.tags["covault.roles"].split(",")],
                settings=wandb.Settings(silent=True, disable_git=True, x_disable_stats=True),
                reinit="create_new",
            )
            try:
                for epoch, loss in enumerate(view.losses, start=1):
                    run.log({"loss": loss, "epoch": epoch}, step=epoch)
                run.summary.update({f"test_{k}": v for k, v in view.metrics.items()})
                run.summary.update({f"plaintext_test_{k}": v for k, v in view.plaintext.items()})
                run.summary.update(view.own)
                if view.receives_model:
                    files = files or _files(result, report, Path(tmp))
                    art = wandb.Artifact(f"{job.name}-model", type="model", metadata=view.tags)
                    for path in files.values():
                        art.add_file(str(path))
                    run.log_artifact(art)
                runs[view.party] = Path(run.dir).parent
            finally:
                run.finish()
    return runs


def _files(result: dict[str, Any], report: str | Path | None, tmp: Path) -> dict[str, Path]:
    from covault.jobs.report import write_html_report
    from covault.mlops.onnx_model import result_onnx

    model = tmp / "model.onnx"
    model.write_bytes(result_onnx(result).SerializeToString())
    path = Path(report) if report is not None else write_html_report(result, tmp / "report.html")
    return {"model": model, "report": path}
