"""``covault demo --federated``: client processes over mutual TLS, SecAgg+ each round, dropouts
at every SecAgg+ round; the result against plaintext FedAvg with the same clients."""

from __future__ import annotations

import json

import numpy as np
import pytest

from covault.cli import main as cli
from covault.cli.demo_federated import leave_plan, participants
from covault.fl.federated import HUB, client_name, program
from covault.fl.processes import run_star
from covault.fl.training import breast_cancer_split


def test_leave_plan_spreads_dropouts_over_rounds_and_stages():
    plan = leave_plan(10, 0.3, 12)
    assert len(plan) == 3 and {s for _, s in plan.values()} == {2, 3, 4}
    who = participants(10, 12, plan)
    assert who[0] == list(range(10)) and len(who[-1]) == 7


@pytest.mark.processes
@pytest.mark.slow
def test_demo_federated_over_processes(capsys):
    assert (
        cli(["demo", "--federated", "--clients", "8", "--dropout", "0.375", "--rounds", "4", "--json"]) == 0
    )
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["clients_per_round"] == [len(ids) for ids in participants(8, 4, leave_plan(8, 0.375, 4))]
    assert sorted(d["secagg_round"] for d in result["dropouts"].values()) == [2, 3, 4]
    assert result["accuracy_secure"] > 0.9
    assert abs(result["accuracy_secure"] - result["accuracy_plaintext"]) <= 0.02
    assert result["max_weight_difference"] < 1e-3  # 16 fractional bits per update, no clipping bites
    assert "mutual TLS" in result["transport"]


@pytest.mark.processes
def test_too_many_dropouts_in_processes_name_the_round():
    """Three of four clients leave in the first round: the aggregator stops, naming round and count."""
    from covault.fl.errors import TooFewSurvivorsError

    n = 4
    shards, test = breast_cancer_split(n)
    base = {"clients": n, "rounds": 2, "epochs": 2, "lr": 0.5, "clip": 4.0, "frac_bits": 16}
    base |= {"neighbours": 0, "threshold": 2}
    jobs = {HUB: {**base, "test": test}}
    for i in range(n):
        jobs[client_name(i)] = {**base, "index": i, "shard": shards[i], "leave": (0, 3) if i else None}
    with pytest.raises(TooFewSurvivorsError, match=r"round 3 \(masked input\): only 1 clients survive"):
        run_star(program, HUB, [client_name(i) for i in range(n)], jobs, timeout=20.0)
    assert np.isfinite(test[0]).all()
