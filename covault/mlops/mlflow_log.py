"""``covault train JOB --mlflow``: one MLflow run per party of a finished job.

A party in ``reveal_model_to`` logs the hyper-parameters, the loss after each epoch (metric
``loss``, step = epoch), the held-out metrics (``test_NAME``; ``plaintext_test_NAME`` where the
centralised baseline was compared), the model through MLflow's ONNX flavour (with a signature
and an input example of public values), the HTML report and the privacy tags
(:func:`~covault.mlops.content.privacy_tags`). Any other party logs the parameters, the tags
and its own traffic: no metric, loss or model was revealed to it. ``registered_model_name``
registers the first receiver's model (on one host every receiver logs the same weights).
A tracking URI without a scheme is a local folder: ``DIR/mlflow.db`` (SQLite) with the
artifacts in ``DIR/artifacts`` (MLflow refuses its plain-file store). MLflow's usage telemetry is turned off (``MLFLOW_DISABLE_TELEMETRY``) unless set otherwise.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from covault.mlops.content import PartyView, party_views

DEFAULT_TRACKING_URI = "./mlruns"


def settings(job: Any, tracking_uri: str | None = None) -> dict[str, str]:
    """Tracking URI, experiment and registered model name: the command line's URI, else the
    job's ``[mlflow]`` table, else ``./mlruns`` and the experiment ``covault JOBNAME``."""
    cfg = job_mlflow_table(job)
    out = {
        "tracking_uri": tracking_uri or cfg.get("tracking_uri") or DEFAULT_TRACKING_URI,
        "experiment": cfg.get("experiment") or f"covault {job.name}",
    }
    if cfg.get("registered_model_name"):
        out["registered_model_name"] = cfg["registered_model_name"]
    return out


def store_uri(tracking_uri: str) -> tuple[str, str | None]:
    """``(MLflow tracking URI, artifact location for new experiments)``: a URI with a scheme
    as it is (the server decides), a folder as SQLite in it with ``artifacts/`` beside."""
    if "://" in tracking_uri:
        return tracking_uri, None
    folder = Path(tracking_uri).expanduser().absolute()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}", (folder / "artifacts").as_uri()


def job_mlflow_table(job: Any) -> dict[str, str]:
    """The job file's validated ``[mlflow]`` table (empty for a job without a file)."""
    from covault.deploy.config import read_toml
    from covault.jobs.errors import JobError
    from covault.jobs.tracking import mlflow_table

    if job.path is None:
        return {}
    return mlflow_table(read_toml(job.path, "job file", JobError).get("mlflow", {}))


def log_to_mlflow(
    job: Any,
    result: dict[str, Any],
    *,
    tracking_uri: str | None = None,
    experiment: str | None = None,
    registered_model_name: str | None = None,
    report: str | Path | None = None,
) -> dict[str, str]:
    """Log ``result`` of ``job`` (module docstring); ``{party: run_id}``. Arguments left None
    come from :func:`settings`; ``report``: an HTML report to attach (default: one is written)."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    cfg = settings(job, tracking_uri)
    experiment = experiment or cfg["experiment"]
    registered_model_name = registered_model_name or cfg.get("registered_model_name")
    uri, artifacts = store_uri(cfg["tracking_uri"])
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        exp = mlflow.get_experiment_by_name(experiment)
        if exp is None:
            mlflow.create_experiment(experiment, artifact_location=artifacts)
            exp = mlflow.get_experiment_by_name(experiment)
        runs: dict[str, str] = {}
        with tempfile.TemporaryDirectory(prefix="covault-mlflow-") as tmp:
            model = None
            registered = False
            for view in party_views(job, result):
                with mlflow.start_run(
                    run_name=f"{job.name} @ {view.party}", experiment_id=exp.experiment_id, tags=view.tags
                ) as run:
                    _log_values(mlflow, view)
                    if view.receives_model:
                        if model is None:
                            model = _model_files(result, report, Path(tmp))
                        name = None if registered else registered_model_name
                        _log_model(mlflow, model, name)
                        registered = registered or name is not None
                    runs[view.party] = run.info.run_id
        return runs
    finally:
        mlflow.set_tracking_uri(previous)


def _log_values(mlflow: Any, view: PartyView) -> None:
    mlflow.log_params({k: _param(v) for k, v in view.params.items()})
    for epoch, loss in enumerate(view.losses, start=1):
        mlflow.log_metric("loss", loss, step=epoch)
    metrics = {f"test_{k}": v for k, v in view.metrics.items()}
    metrics.update({f"plaintext_test_{k}": v for k, v in view.plaintext.items()})
    metrics.update(view.own)
    if metrics:
        mlflow.log_metrics(metrics)


def _param(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _model_files(result: dict[str, Any], report: str | Path | None, tmp: Path) -> dict[str, Any]:
    """The ONNX model, its input example and signature, and the report's path (written here if
    not given)."""
    from mlflow.models import infer_signature

    from covault.jobs.report import write_html_report
    from covault.mlops.onnx_model import input_example, predict, result_onnx

    proto = result_onnx(result)
    example = input_example(proto)
    signature = infer_signature(example, predict(proto, example))
    path = Path(report) if report is not None else write_html_report(result, tmp / "report.html")
    return {"proto": proto, "example": example, "signature": signature, "report": path}


def _log_model(mlflow: Any, model: dict[str, Any], registered_model_name: str | None) -> None:
    import mlflow.onnx

    mlflow.onnx.log_model(
        model["proto"],
        name="model",
        signature=model["signature"],
        input_example=model["example"],
        registered_model_name=registered_model_name,
        onnx_execution_providers=["CPUExecutionProvider"],
    )
    mlflow.log_artifact(str(model["report"]))
