"""``covault demo --federated``: hospitals train logistic regression by federated averaging, the
aggregator learning only the sum of their updates (SecAgg+), one OS process each over mutual TLS.

Not a command of its own (no ``HELP``): :mod:`covault.cli.demo` adds these options and hands
over when ``--federated`` is given.
"""

from __future__ import annotations

import argparse
from typing import Any

from covault.exitcodes import EXIT_OK

PROG = "covault demo --federated"


def fraction(text: str) -> float:
    """An argparse type: a number in [0, 1)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 0 and below 1, got {value}")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    from covault.cli.common import positive_int

    g = p.add_argument_group("federated learning (--federated)")
    g.add_argument(
        "--federated",
        action="store_true",
        help="federated averaging with secure aggregation (SecAgg+) instead of MPC training",
    )
    g.add_argument("--clients", type=positive_int, default=10, help="--federated: clients (default 10)")
    g.add_argument(
        "--dropout",
        type=fraction,
        default=0.2,
        help="--federated: fraction of the clients that drop out during training (default 0.2)",
    )
    g.add_argument("--rounds", type=positive_int, default=20, help="--federated: FedAvg rounds (default 20)")
    g.add_argument(
        "--noise-multiplier",
        type=float,
        default=0.0,
        metavar="Z",
        help="--federated: distributed DP noise of std Z x clip on the sum, clip 1 (default 0: none, clip 4)",
    )


def leave_plan(clients: int, dropout: float, rounds: int) -> dict[int, tuple[int, int]]:
    """``{client: (FedAvg round, SecAgg+ round)}`` at which ``round(dropout * clients)`` clients
    leave: chosen by a public permutation, spread over the training and over SecAgg+ rounds 2
    (after advertising keys), 3 (after sharing them) and 4 (after sending the masked input)."""
    from covault.randomness.public import public_permutation

    m = round(dropout * clients)
    who = [int(u) for u in public_permutation(0, "federated demo dropouts", clients)[:m]]
    return {u: (1 + j * max(rounds - 1, 1) // max(m, 1), 2 + j % 3) for j, u in enumerate(who)}


def participants(clients: int, rounds: int, plan: dict[int, tuple[int, int]]) -> list[list[int]]:
    """The clients whose update enters each round's sum (one that leaves after masking still does)."""
    return [
        [u for u in range(clients) if u not in plan or plan[u][0] > r or plan[u] == (r, 4)]
        for r in range(rounds)
    ]


def run(args: argparse.Namespace) -> dict[str, Any]:
    import time

    import numpy as np

    from covault.fl.config import RoundConfig
    from covault.fl.federated import HUB, client_name, program
    from covault.fl.processes import run_star
    from covault.fl.training import accuracy, breast_cancer_split, fedavg_plain

    n, rounds = args.clients, args.rounds
    if n < 3:
        from covault.fl.errors import SecAggError

        raise SecAggError(f"{PROG}: secure aggregation needs at least 3 clients here, got {n}")
    shards, test = breast_cancer_split(n)
    plan = leave_plan(n, args.dropout, rounds)
    z = args.noise_multiplier
    if not (z >= 0 and np.isfinite(z)):
        from covault.fl.errors import SecAggError

        raise SecAggError(f"{PROG}: --noise-multiplier must be a finite number >= 0, got {z}")
    clip = 1.0 if z else 4.0
    t = RoundConfig(clients=n, dim=1, seed=0).threshold
    honest = max(1, n - len(plan) - (t - 1))  # the clients that stay, less the most colluders t - 1
    base = {"clients": n, "rounds": rounds, "epochs": 5, "lr": 0.5, "clip": clip, "frac_bits": 16}
    base |= {"neighbours": 0, "threshold": 0, "sigma": z * clip, "honest": honest}
    jobs = {HUB: {**base, "test": test}}
    for i in range(n):
        jobs[client_name(i)] = {**base, "index": i, "shard": shards[i], "leave": plan.get(i)}
    t0 = time.perf_counter()
    res = run_star(program, HUB, [client_name(i) for i in range(n)], jobs, timeout=60.0)
    wall = time.perf_counter() - t0
    hub = res[HUB]
    who = participants(n, rounds, plan)
    got = [r["survivors"] for r in hub["rounds"]]
    if got != [len(ids) for ids in who]:
        from covault.errors import ProtocolError

        raise ProtocolError(f"{PROG}: clients per round {got}, expected {[len(ids) for ids in who]}")
    plain = fedavg_plain(shards, who, base["epochs"], base["lr"])
    w = np.array(hub["weights"])
    stays = [client_name(i) for i in range(n) if i not in plan]
    sent = float(np.mean([res[c]["stats"]["bytes_sent"] for c in stays])) / rounds
    received = float(np.mean([res[c]["stats"]["bytes_received"] for c in stays])) / rounds
    dim = len(w)
    return {
        "clients": n,
        "rounds": rounds,
        "dropouts": {client_name(u): {"round": r, "secagg_round": s} for u, (r, s) in sorted(plan.items())},
        "clients_per_round": got,
        "test_rows": len(test[1]),
        "accuracy_secure": hub["accuracy"],
        "accuracy_plaintext": accuracy(plain, test),
        "max_weight_difference": float(np.max(np.abs(w - plain))),
        "bytes_per_client_per_round": {"sent": sent, "received": received},
        "bytes_per_client_per_round_plain": {"sent": dim * 4 + 24, "received": dim * 8 + 24},
        "aggregator_seconds": hub["seconds"],
        "aggregator_cpu_seconds": hub["cpu_seconds"],
        "client_cpu_seconds_mean": float(np.mean([res[c]["cpu_seconds"] for c in stays])),
        "wall_seconds": wall,
        "noise_multiplier": z,
        "dp": None
        if not z
        else {
            "epsilon": dp_epsilon(z, rounds),
            "delta": DELTA,
            "unit": "one client's update replaced (client-level), every client in every round",
            "honest_clients_assumed": honest,
        },
        "transport": "tcp, mutual TLS 1.3 (throw-away CA), one process per client and one for the aggregator",
    }


DELTA = 1e-5


def dp_epsilon(z: float, rounds: int) -> float | None:
    """Client-level epsilon at :data:`DELTA` (None without Google's dp-accounting)."""
    try:
        from covault.fl.dp import epsilon

        return epsilon(z, rounds, DELTA)
    except ImportError:
        return None


def report(r: dict[str, Any]) -> str:
    drops = ", ".join(
        f"{c} (FedAvg round {d['round']}, SecAgg+ round {d['secagg_round']})"
        for c, d in r["dropouts"].items()
    )
    b, p = r["bytes_per_client_per_round"], r["bytes_per_client_per_round_plain"]
    return "\n".join(
        [
            f"clients per round: {r['clients_per_round']}",
            f"dropped: {drops or 'none'}",
            f"test accuracy ({r['test_rows']} rows): secure FedAvg {r['accuracy_secure']:.4f}, "
            f"plaintext FedAvg {r['accuracy_plaintext']:.4f} (largest weight difference "
            f"{r['max_weight_difference']:.2e}: clipping, 16-bit fixed point{', DP noise' if r['dp'] else ''})",
            f"bytes per client per round: sent {b['sent']:,.0f}, received {b['received']:,.0f} "
            f"(plain FedAvg: sent {p['sent']:,}, received {p['received']:,})",
            *(
                []
                if r["dp"] is None
                else [
                    f"distributed DP: noise multiplier {r['noise_multiplier']:g}, made up by any "
                    f"{r['dp']['honest_clients_assumed']} honest clients; client-level epsilon "
                    f"{r['dp']['epsilon'] if r['dp']['epsilon'] is None else round(r['dp']['epsilon'], 3)} "
                    f"at delta {r['dp']['delta']:g} over {r['rounds']} rounds"
                ]
            ),
            f"time: {r['wall_seconds']:.1f} s in all (processes started, TLS set up), aggregator "
            f"{r['aggregator_seconds']:.2f} s for {r['rounds']} rounds ({r['aggregator_cpu_seconds']:.2f} s CPU), "
            f"client CPU {r['client_cpu_seconds_mean']:.3f} s each",
        ]
    )


def main(args: argparse.Namespace) -> int:
    import json
    import textwrap

    from covault.cli.common import run_job

    def body() -> int:
        if not args.json:
            text = (
                f"{PROG}: {args.clients} hospitals each hold some of the breast-cancer patients and train "
                f"logistic regression by federated averaging ({args.rounds} rounds). Each is an OS process "
                "talking mutual TLS to the aggregator, which learns only the sum of their clipped, quantised "
                f"updates (SecAgg+: pairwise masks from X25519, Shamir-shared seeds); {args.dropout:.0%} of "
                "them drop out on the way. Baseline: plaintext FedAvg with the same clients."
            )
            print(textwrap.fill(text, width=100), flush=True)
        result = run(args)
        print(json.dumps(result) if args.json else report(result), flush=True)
        return EXIT_OK

    return run_job(PROG, body)
