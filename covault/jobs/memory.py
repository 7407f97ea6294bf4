"""Memory check of an MLP job, at every party, before any secret computation.

Every party that holds shares (the compute parties and the 2pc dealer) puts the memory its host
has available (:func:`covault.ml.mlp.available_memory`) in its status (:mod:`covault.jobs.schema`,
MLP jobs only). Once the schema is agreed, every party knows the number of features and rows
and computes the same per-party estimate (:func:`covault.ml.mlp.memory_estimate`: the weights,
the hidden units of all training rows evaluated at once for the loss curve, the input cells),
so every party raises the same :class:`~covault.jobs.errors.JobError` when some host is short.
When every party runs on one host (:func:`covault.jobs.run_local`, ``shared_host``), the
parties holding shares are counted together against that host's memory.
"""

from __future__ import annotations

from typing import Any

from covault.jobs.errors import JobError


def memory_status(job, session) -> dict[str, Any]:
    """``{"memory": bytes available}`` for the status of a party holding shares of an MLP job,
    else ``{}`` (nothing to check, nothing announced)."""
    if job.task != "mlp" or session.party not in _holders(session):
        return {}
    from covault.ml.mlp import available_memory

    return {"memory": available_memory()}


def check_memory(
    job,
    session,
    statuses: dict[str, dict[str, Any]],
    n_features: int,
    rows: int,
    rows_at_once: int,
    *,
    shared_host: bool = False,
) -> None:
    """JobError (the same at every party) if a party holding shares lacks the memory to train
    the job's MLP on ``rows`` rows with ``n_features`` features, ``rows_at_once`` of them
    evaluated at once; every holder's available memory comes from its ``statuses`` entry."""
    if job.task != "mlp":
        return
    from covault.ml.mlp import describe_network, format_bytes

    est = job.estimator()
    need = est.memory_bytes(n_features, rows, rows_at_once)
    holders = _holders(session)
    free = {p: statuses.get(p, {}).get("memory") for p in holders}
    free = {p: int(m) for p, m in free.items() if isinstance(m, int | float) and not isinstance(m, bool)}
    what = (
        f"the job needs about {format_bytes(need)} of memory per compute party "
        f"({describe_network(n_features, est.hidden, rows_at_once)})"
    )
    if shared_host:
        if free and need * len(holders) > min(free.values()):
            raise JobError(
                f"{what}, {format_bytes(need * len(holders))} for the {len(holders)} parties holding "
                f"shares on this host ({', '.join(holders)}); this host has "
                f"{format_bytes(min(free.values()))} available"
            )
        return
    short = [p for p, m in free.items() if need > m]
    if short:
        hosts = ", ".join(f"the host of party {p!r} has {format_bytes(free[p])} available" for p in short)
        raise JobError(f"{what}; {hosts}")


def _holders(session) -> list[str]:
    """The parties that hold shares or deal: compute parties, then the 2pc dealer."""
    return [*session.compute_parties, *([session.dealer] if session.dealer else [])]
