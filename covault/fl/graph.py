"""The neighbour graph of a SecAgg+ round: a random k-regular graph from a PUBLIC round seed.

Bell et al. (CCS 2020, section 3) replace the complete graph of Bonawitz et al. (CCS 2017) by a
random k-regular one (a Harary graph on randomly permuted nodes), with ``k = O(log n)``: a
client exchanges keys and shares with its ``k`` neighbours only, so its cost grows with
``log n`` instead of ``n``. Here: the clients are ordered by a public permutation drawn from the
round seed (:func:`covault.randomness.public.public_permutation`), placed on a ring, and each is
joined to the ``k / 2`` clients on either side (``k`` even; ``k >= n - 1`` gives the complete
graph). The seed is public: every client and the server compute the same graph, which must be
drawn after the clients (and any colluders among them) are fixed.
"""

from __future__ import annotations

from covault.fl.errors import SecAggError
from covault.randomness.public import public_permutation


def neighbours(n: int, k: int, seed: int) -> list[tuple[int, ...]]:
    """For each client id ``0..n-1`` its neighbours (sorted), ``k`` of them (``n - 1`` if fewer)."""
    if n < 2:
        raise SecAggError(f"secure aggregation needs at least 2 clients, got {n}")
    if k >= n - 1:
        return [tuple(v for v in range(n) if v != u) for u in range(n)]
    if k < 2 or k % 2:
        raise SecAggError(f"secure aggregation: the neighbour count k must be even and at least 2, got {k}")
    order = [int(i) for i in public_permutation(seed, "secagg+ neighbour graph", n)]
    place = {c: i for i, c in enumerate(order)}
    out = []
    for u in range(n):
        i = place[u]
        near = {order[(i + d) % n] for d in range(1, k // 2 + 1)} | {
            order[(i - d) % n] for d in range(1, k // 2 + 1)
        }
        out.append(tuple(sorted(near)))
    return out
