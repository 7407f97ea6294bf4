"""A job's ``[privacy]`` table at run time: DP-SGD parameters for the estimator, each owner's
check of its features against the public bound, and the result's privacy fields."""

from __future__ import annotations

from typing import Any

import numpy as np

from covault.jobs.errors import JobError
from covault.privacy.dpsgd import DPSGD


def job_dpsgd(job: Any) -> DPSGD | None:
    """The job's DP-SGD parameters, or None for a job without ``[privacy]``."""
    if job.privacy is None:
        return None
    return DPSGD(**{k: v for k, v in job.privacy.items() if k != "feature_bound"})


def check_features(job: Any, party: str, block: np.ndarray, d: int) -> np.ndarray:
    """``block`` (``[features | label]`` rows of ``party``) unchanged; JobError naming the party,
    the bound and the first feature beyond ``[privacy] feature_bound`` (checked at the owner,
    before the rows are shared: the clipping's bound relies on it)."""
    if job.privacy is None:
        return block
    bound = float(job.privacy["feature_bound"])
    over = np.abs(block[:, :d]) > bound
    if over.any():
        row, col = (int(i) for i in np.argwhere(over)[0])
        raise JobError(
            f"party {party!r}: feature {col} of training row {row} is {block[row, col]:g}, beyond "
            f"[privacy] feature_bound = {bound:g} (bound the features with [transform] clip and scale)"
        )
    return block


def bound_features(job: Any, x: Any) -> Any:
    """The shared training features with the public ``feature_bound`` as their bound."""
    return x if job.privacy is None else x.with_bound(float(job.privacy["feature_bound"]))


def result_fields(first: dict[str, Any]) -> dict[str, Any]:
    """``privacy``, ``epsilon_spent`` and ``delta`` of a DP job's result (nothing otherwise)."""
    info = first.get("privacy")
    if info is None:
        return {}
    return {"privacy": info, "epsilon_spent": info["epsilon_spent"], "delta": info["delta"]}
