"""What one party of a finished job may log: its view of the job's result.

Every party learns the job's public facts (protocol, parties and their roles, hyper-parameters,
row counts, the fingerprint, the reveal list, the privacy parameters) and its own traffic; the
parties in ``reveal_model_to`` also learn the held-out metrics, the loss after each epoch and
the model (``docs/jobs.md``, What is public). :func:`party_views` gives each party's share of a
result and nothing more; the loggers log only these.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

TRUST = {
    "rep3": "semi-honest parties, honest majority: at most one of the three compute parties is "
    "corrupted (two colluding compute parties learn the inputs)",
    "2pc/dealer": "semi-honest parties; the dealer colludes with neither compute party",
    "2pc/ot": "semi-honest parties; the two compute parties do not collude (no dealer)",
    "2pc": "semi-honest parties; the two compute parties do not collude",
}


@dataclass
class PartyView:
    """What ``party`` learnt: ``params`` (hyper-parameters and public settings), ``tags``
    (privacy and provenance, strings), ``losses`` (per epoch), ``metrics`` (held-out, secure),
    ``plaintext`` (the centralised baseline's, where compared), ``own`` (its own bytes sent and
    received, rounds); ``receives_model``: whether the weights were revealed to it."""

    party: str
    receives_model: bool
    params: dict[str, Any]
    tags: dict[str, str]
    losses: list[float] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    plaintext: dict[str, float] = field(default_factory=dict)
    own: dict[str, float] = field(default_factory=dict)


def trust_assumptions(protocol: str, provider: str | None) -> str:
    """The threat model a job's results rest on, in one sentence."""
    key = protocol if provider is None else f"{protocol}/{provider}"
    return TRUST.get(key, TRUST.get(protocol, "semi-honest parties"))


def privacy_tags(job: Any, result: dict[str, Any], party: str) -> dict[str, str]:
    """``covault.*`` tags that describe the privacy of a run (docs/mlops.md)."""
    roles = {name: info["roles"] for name, info in result["parties"].items()}
    tags = {
        "covault.party": party,
        "covault.roles": ",".join(roles.get(party, [])),
        "covault.protocol": job.protocol if job.provider is None else f"{job.protocol} ({job.provider})",
        "covault.parties": json.dumps(roles, sort_keys=True),
        "covault.trust": trust_assumptions(job.protocol, job.provider),
        "covault.reveal_model_to": json.dumps(list(job.reveal_model_to)),
        "covault.job_fingerprint": job.fingerprint(),
        "covault.task": job.task,
        "covault.partition": job.partition,
        "covault.differential_privacy": "no" if job.privacy is None else "DP-SGD inside MPC",
    }
    if result.get("epsilon_spent") is not None:
        tags["covault.epsilon"] = f"{result['epsilon_spent']:.6g}"
        tags["covault.delta"] = f"{result['delta']:.6g}"
    return tags


def party_params(job: Any, result: dict[str, Any]) -> dict[str, Any]:
    """The public parameters of the run: hyper-parameters and the job's public settings."""
    params = {f"model.{k}": v for k, v in sorted(result["hyperparameters"].items())}
    params.update(
        task=job.task,
        label=job.label,
        n_features=len(result["features"]),
        seed=job.seed,
        test_fraction=job.test_fraction,
        threshold=job.threshold,
        train_rows=result["train_rows"],
        test_rows=result["test_rows"],
    )
    if job.privacy is not None:
        params.update({f"privacy.{k}": v for k, v in sorted(job.privacy.items())})
    return params


def party_views(job: Any, result: dict[str, Any]) -> list[PartyView]:
    """One view per party of the job, in the job's order (receivers first)."""
    names = list(result["parties"])
    order = [p for p in job.reveal_model_to if p in names] + [
        p for p in names if p not in job.reveal_model_to
    ]
    views = []
    for party in order:
        receives = party in job.reveal_model_to
        own = {
            key: float(result[key][party])
            for key in ("bytes_sent", "bytes_received", "rounds")
            if result.get(key, {}).get(party) is not None
        }
        view = PartyView(
            party, receives, party_params(job, result), privacy_tags(job, result, party), own=own
        )
        if receives:
            view.losses = [float(v) for v in result.get("loss_curve") or []]
            view.metrics = {k: float(v) for k, v in (result.get("metrics") or {}).items() if v is not None}
            plain = (result.get("plaintext") or {}).get("metrics") or {}
            view.plaintext = {k: float(v) for k, v in plain.items() if v is not None}
        views.append(view)
    return views
