"""A job's trained model kept secret-shared: job keys ``reveal_model_to = []`` and
``model_store = "NAME"`` (``docs/serving.md``).

Each compute party writes its shares, and nothing else, to ``MODEL_DIR/NAME.PARTY.shares``,
encrypted under its at-rest key: ``PARTY.store.key`` in the job's ``[tls] certs`` folder (the
folder of its TLS key) where the job names one, else in ``MODEL_DIR/keys``. The model's public
header carries the job's model inputs and preprocessing (what a client's raw columns go through,
:mod:`covault.serving.inputs`) and the answer policy (job key ``answer``, the decision at the
job's ``threshold``: :mod:`covault.serving.policy`).
"""

from __future__ import annotations

from typing import Any


def store_trained(job, session, est, model_inputs: list[str], preprocessing) -> dict[str, Any]:
    """Every party: save the trained estimator ``est`` as model ``job.model_store``; returns
    ``{"model", "model_id", "path", "bytes", "seconds", "folder"}`` (``path``: this party's file,
    None where it holds no shares)."""
    from covault.serving.keys import store_folders
    from covault.serving.model import from_estimator, save_model
    from covault.serving.policy import make_answer, takes_threshold

    info = {
        "task": job.task,
        "job": job.fingerprint(),
        "model_inputs": list(model_inputs),
        "preprocessing": None if preprocessing is None else preprocessing.to_json(),
        "label": job.label,
        "threshold": job.threshold,
    }
    model = from_estimator(est, job.model_store, job.task, info)
    margin = job.answer == "decision" and takes_threshold(model.layers)
    model.info["answer"] = make_answer(
        job.answer, job.threshold if margin else None, model.layers, model.name
    )
    folder, keys = store_folders(job.config, job.model_dir)
    return {**save_model(session, model, folder, keys), "folder": str(folder)}
