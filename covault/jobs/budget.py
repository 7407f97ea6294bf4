"""A job's differential-privacy spending, checked against every data owner's budget before
anything is sent, and charged to each owner's ledger.

What a job spends about an owner's rows: the epsilon of its DP-SGD training (``[privacy]``
of the job, planned from the public row count after the schema round, or given) plus that of
the owner's locally noised columns the job uses (``[privacy.local_dp]`` of its policy). Each
owner announces in the schema round its cap (``[privacy] max_epsilon``), what its ledger says
is spent, and its local epsilon; every party then checks every owner alike (:func:`admit`) and
all raise the same :class:`~covault.jobs.errors.RefusedError` naming the owner, the cap, the
spent and the remaining budget, before any row is shared (exit status 2, like every policy
refusal). Otherwise each owner charges its own ledger (check and charge in one transaction).
The ledger is the policy's file (:meth:`covault.ingest.policy.Policy.ledger_file`); an owner
without a policy file has no ledger and no cap.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from covault.errors import PrivacyBudgetError
from covault.ingest.local_dp import local_epsilon
from covault.ingest.policy import Policy
from covault.jobs.errors import RefusedError
from covault.privacy.ledger import Ledger, within


def _spent(path: Path, owner: str) -> tuple[float, float]:
    return Ledger(path).spent(owner) if path.exists() else (0.0, 0.0)


def used_columns(rows: Any) -> list[str]:
    """The owner's columns the job uses (features and label)."""
    return [*rows.features, rows.table.columns[-1].name]


def announce(policy: Policy | None, party: str, rows: Any) -> dict[str, Any]:
    """What owner ``party`` says of its budget in the schema round (public): ``{"privacy":
    {"cap", "spent", "local_epsilon", "local_columns"}}``, or nothing without a ledger."""
    path = None if policy is None else policy.ledger_file(party)
    if path is None:
        return {}
    used = used_columns(rows) if rows is not None else []
    noised = [c for c in used if c in policy.local_dp]
    said = {"cap": policy.max_epsilon, "spent": _spent(path, party)[0], "local_columns": noised}
    return {"privacy": said | {"local_epsilon": local_epsilon(policy.local_dp, noised)}}


def job_epsilon(job: Any, n_train: int) -> tuple[float, float]:
    """``(epsilon, delta)`` of the job's DP-SGD training over ``n_train`` pooled rows (planned
    from public values alone), ``(0, 0)`` for a job without ``[privacy]``."""
    params = getattr(job, "privacy", None)
    if params is None:
        return 0.0, 0.0
    from covault.privacy.dpsgd import DPSGD

    dp = DPSGD(**{k: v for k, v in params.items() if k != "feature_bound"})
    if dp.epsilon is not None:
        return float(dp.epsilon), float(dp.delta)
    est = job.estimator()
    q, steps = dp.schedule(n_train, est.batch_size, est.epochs)
    return dp.spent(dp.sigma(q, steps), q, steps), float(dp.delta)


def admit(
    job: Any,
    statuses: dict[str, dict[str, Any]],
    n_train: int,
    party: str,
    policy: Policy | None,
    hooks: Any = None,
) -> None:
    """Every owner's budget checked alike at every party (module docstring); then owner
    ``party`` charges its ledger, and records each charge in its audit log where the job runs
    governed (``hooks``: :class:`covault.jobs.governed.Hooks`). RefusedError naming the first
    owner over its cap."""
    if not any(statuses.get(o, {}).get("privacy") for o in job.data_parties):
        return  # no owner keeps a ledger
    eps, delta = job_epsilon(job, n_train)
    for owner in job.data_parties:
        said = statuses.get(owner, {}).get("privacy")
        if not said:
            continue
        need = eps + float(said["local_epsilon"])
        if said["cap"] is not None and not within(float(said["spent"]), need, float(said["cap"])):
            exc = PrivacyBudgetError(owner, float(said["cap"]), float(said["spent"]), need, "this job")
            raise RefusedError(
                f"{owner} refused the job: rule privacy.max_epsilon: {exc}",
                party=owner,
                rule="privacy.max_epsilon",
                subject=owner,
                key="privacy",
            )
    said = statuses.get(party, {}).get("privacy")
    if policy is None or not said:
        return
    ledger = Ledger(policy.ledger_file(party))
    releases = []
    if said["local_epsilon"] > 0:
        releases.append(
            ("local DP", said["local_epsilon"], 0.0, "local DP of " + ", ".join(said["local_columns"]))
        )
    if eps > 0 and math.isfinite(eps):
        releases.append(("DP-SGD", eps, delta, f"DP-SGD training ({job.task})"))
    try:
        for mechanism, epsilon, d, what in releases:
            ledger.charge_within(party, epsilon, d, job.fingerprint(), what, policy.max_epsilon)
            if hooks is not None:
                hooks.privacy_budget(epsilon=epsilon, delta=d, mechanism=mechanism, owner=party, what=what)
    except PrivacyBudgetError as exc:  # another job charged in between
        raise RefusedError(
            f"{party} refused the job: rule privacy.max_epsilon: {exc}",
            party=party,
            rule="privacy.max_epsilon",
            subject=party,
            key="privacy",
        ) from None


def plan_entry(job: Any, party: str, policy: Policy, rows: Any) -> dict[str, Any] | None:
    """The budget part of ``covault plan``'s dry run at owner ``party`` (None without a
    ledger): the ledger, cap, spent, remaining, the local epsilon and the job's DP-SGD epsilon
    where it is known before the pooled row count (a given ``epsilon``)."""
    said = announce(policy, party, rows).get("privacy")
    if said is None:
        return None
    params = getattr(job, "privacy", None)
    job_eps: float | str = 0.0
    if params is not None:
        job_eps = float(params["epsilon"]) if params.get("epsilon") is not None else "from the pooled rows"
    cap = said["cap"]
    out = {
        "ledger": str(policy.ledger_file(party)),
        "cap": cap,
        "spent": said["spent"],
        "remaining": None if cap is None else max(cap - said["spent"], 0.0),
        "local_epsilon": said["local_epsilon"],
        "job_epsilon": job_eps,
    }
    if cap is not None and isinstance(job_eps, float):
        need = job_eps + said["local_epsilon"]
        if not within(said["spent"], need, cap):
            out["refusal"] = str(PrivacyBudgetError(party, cap, said["spent"], need, "this job"))
    return out
