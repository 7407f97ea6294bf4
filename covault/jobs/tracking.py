"""A job's ``[mlflow]`` table: where each party logs its view of the result (``docs/mlops.md``).
Not part of the fingerprint: each party's tracking server is its own."""

from __future__ import annotations

from typing import Any

from covault.jobs.errors import JobError

MLFLOW_KEYS = ("tracking_uri", "experiment", "registered_model_name")


def mlflow_table(raw: Any) -> dict[str, str]:
    """The validated ``[mlflow]`` table: optional non-empty strings; JobError naming the key."""
    if not isinstance(raw, dict):
        raise JobError(f"mlflow must be a table ([mlflow]), got {raw!r}")
    for key, value in raw.items():
        if key not in MLFLOW_KEYS:
            raise JobError(f"mlflow.{key}: unknown key (known: {', '.join(MLFLOW_KEYS)})")
        if not isinstance(value, str) or not value.strip():
            raise JobError(f"mlflow.{key} must be a non-empty string, got {value!r}")
    return dict(raw)
