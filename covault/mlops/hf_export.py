"""``covault export-hf MODEL_DIR``: a jointly trained model as a Hugging Face model folder.

``MODEL_DIR`` holds ``result.json``, the job's result as ``covault train JOB --json`` prints
it (``covault train JOB --json > MODEL_DIR/result.json``); only a party that received the
model has one with weights. The folder written (default ``MODEL_DIR/hf``) holds
``model.safetensors`` (the revealed weights, float64: ``coef`` and ``intercept``, or
``coefs.I`` and ``intercepts.I`` per MLP layer), ``model.onnx`` (the graph ``model_out``
holds, taking raw rows), ``config.json`` (task, label, features, preprocessing, layer shapes)
and ``README.md``, a model card (``huggingface_hub``'s ``ModelCard`` / ``ModelCardData``) that
states how the model was trained: the data parties by name with their row counts (public to
every party of a job), the protocol and its threat model, the held-out metrics, and the
differential-privacy guarantee where DP-SGD was used. Nothing is uploaded:
``huggingface_hub``'s ``push_to_hub`` is left to the user.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from covault.jobs.errors import JobError
from covault.mlops.content import trust_assumptions

PIPELINE = {"classification": "tabular-classification", "regression": "tabular-regression"}


def read_result(model_dir: str | Path) -> dict[str, Any]:
    """``MODEL_DIR/result.json`` (or the JSON file given), checked to hold a revealed model."""
    path = Path(model_dir)
    path = path / "result.json" if path.is_dir() else path
    if not path.is_file():
        raise JobError(
            f"covault export-hf: {path} not found; write it at a receiver of the model with "
            "covault train JOB --json > MODEL_DIR/result.json"
        )
    try:
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        result = json.loads(lines[-1])
    except (ValueError, IndexError) as exc:
        raise JobError(f"covault export-hf: {path} is not a job result (one JSON object): {exc}") from None
    for key in ("task", "label", "features", "parties", "protocol"):
        if key not in result:
            raise JobError(f"covault export-hf: {path} is not a job result: no key {key!r}")
    if result.get("model") is None:
        raise JobError(
            f"covault export-hf: {path} holds no model: it was revealed to nobody "
            "(reveal_model_to = []) or this party is not a receiver"
        )
    return result


def weight_tensors(result: dict[str, Any]) -> dict[str, np.ndarray]:
    """The revealed weights as named float64 arrays (module docstring)."""
    w = result["model"]
    if "coefs" in w:
        out = {f"coefs.{i}": np.asarray(c, dtype=np.float64) for i, c in enumerate(w["coefs"])}
        out |= {f"intercepts.{i}": np.asarray(b, dtype=np.float64) for i, b in enumerate(w["intercepts"])}
        return out
    return {
        "coef": np.asarray(w["coef"], dtype=np.float64).reshape(-1),
        "intercept": np.asarray([w["intercept"]], dtype=np.float64),
    }


def export_hf(model_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the Hugging Face folder of ``MODEL_DIR``'s result (module docstring); its path."""
    from safetensors.numpy import save_file

    from covault.mlops.onnx_model import result_onnx

    result = read_result(model_dir)
    base = Path(model_dir) if Path(model_dir).is_dir() else Path(model_dir).parent
    folder = Path(out) if out is not None else base / "hf"
    folder.mkdir(parents=True, exist_ok=True)
    tensors = weight_tensors(result)
    save_file(
        tensors, str(folder / "model.safetensors"), metadata={"format": "covault", "task": result["task"]}
    )
    (folder / "model.onnx").write_bytes(result_onnx(result).SerializeToString())
    config = {
        "library_name": "covault",
        "model_type": f"covault_{result['task']}",
        "task": result["task"],
        "label": result["label"],
        "features": result["features"],
        "model_inputs": result.get("model_inputs") or result["features"],
        "preprocessing": result.get("preprocessing"),
        "hyperparameters": result.get("hyperparameters", {}),
        "weights": {k: list(v.shape) for k, v in tensors.items()},
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    model_card(result).save(folder / "README.md")
    return folder


def _kind(task: str) -> str:
    return "regression" if task == "linear_regression" else "classification"


def model_card(result: dict[str, Any]) -> Any:
    """The ``huggingface_hub.ModelCard`` of a job result (module docstring)."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    task, kind = result["task"], _kind(result["task"])
    name = f"covault-{Path(result['job']).stem if result.get('job') else 'job'}-{task}"
    data_parties = {p: i for p, i in result["parties"].items() if "data" in i["roles"]}
    metrics = {k: v for k, v in (result.get("metrics") or {}).items() if v is not None}
    evals = [
        EvalResult(
            task_type=PIPELINE[kind],
            dataset_type="held-out",
            dataset_name=f"held-out rows of {', '.join(data_parties)}",
            metric_type=k,
            metric_value=float(v),
            metric_name=f"{k} (secure, on the pooled held-out rows)",
        )
        for k, v in metrics.items()
    ]
    covault = {
        "protocol": result["protocol"],
        "threat_model": trust_assumptions(result["protocol"], _provider(result)),
        "partition": result.get("partition"),
        "compute": result.get("compute"),
        "dealer": result.get("dealer"),
        "reveal_model_to": result.get("reveal_model_to"),
        "data_parties": {
            p: {k: i[k] for k in ("train_rows", "test_rows") if i.get(k) is not None}
            for p, i in data_parties.items()
        },
        "differential_privacy": None
        if result.get("epsilon_spent") is None
        else {"epsilon": result["epsilon_spent"], "delta": result["delta"], "mechanism": "DP-SGD inside MPC"},
    }
    data = ModelCardData(
        model_name=name,
        library_name="covault",
        pipeline_tag=PIPELINE[kind],
        tags=["covault", "secure-multi-party-computation", result["protocol"], task],
        eval_results=evals or None,
        covault=covault,
    )
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{_body(result, name, data_parties, metrics)}")


def _provider(result: dict[str, Any]) -> str | None:
    return "dealer" if result.get("dealer") else None


def _body(result: dict[str, Any], name: str, data_parties: dict[str, Any], metrics: dict[str, float]) -> str:
    from covault.jobs.report import METRIC_NAMES, format_metric, privacy_line

    rows = "\n".join(
        f"| {p} | {', '.join(i['roles'])} | {i.get('train_rows', '-')} | {i.get('test_rows', '-')} |"
        for p, i in data_parties.items()
    )
    table = "\n".join(f"| {METRIC_NAMES.get(k, k)} | {format_metric(k, v)} |" for k, v in metrics.items())
    plain = (result.get("plaintext") or {}).get("metrics") or {}
    if plain:
        table += "\n" + "\n".join(
            f"| {METRIC_NAMES.get(k, k)} (centralised plaintext baseline) | {format_metric(k, v)} |"
            for k, v in plain.items()
            if v is not None
        )
    dp = privacy_line(result) or (
        "No differential privacy: the model's weights are revealed exactly to the parties in "
        "`reveal_model_to`; MPC hides the rows from the other parties during training, not from "
        "what the model itself may disclose."
    )
    return f"""# {name}

A {result["task"].replace("_", " ")} model predicting `{result["label"]}` from {len(result["features"])}
features, trained jointly under secure multi-party computation with covault: no
party saw another party's rows.

## How it was trained

- Protocol: `{result["protocol"]}`; compute parties: {", ".join(result.get("compute") or [])}
  {f"with the dealer {result['dealer']}" if result.get("dealer") else ""}
- Threat model: {trust_assumptions(result["protocol"], _provider(result))}.
- Data partition: {result.get("partition", "horizontal")}.
- The model, its held-out metrics and its loss curve were revealed to: {", ".join(result.get("reveal_model_to") or [])}.
- Hyper-parameters: `{json.dumps(result.get("hyperparameters", {}), sort_keys=True)}`.

### Data parties

Row counts are announced to every party of the job before training (the rows stay secret).

| party | roles | training rows | held-out rows |
|---|---|---|---|
{rows}

## Evaluation (held-out rows, computed under MPC)

| metric | value |
|---|---|
{table}

## Privacy

{dp}

## Files

`model.safetensors` (weights, float64), `model.onnx` (the model with its preprocessing, taking
raw rows), `config.json` (features, label, preprocessing).
"""
