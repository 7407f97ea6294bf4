"""Row alignment of a vertically partitioned job: which rows take part, in which order.

1. The data parties run a private set intersection (:func:`covault.protocols.psi.intersect`)
   on their row ids, tagged ``train:ID`` / ``test:ID`` so that training and test files are
   matched by one intersection. Every data party learns the common tagged ids in the same
   canonical order and where each sits in its own file; ids outside the intersection stay
   private (the set sizes are public).
2. Split: with test files, the common ``test:`` ids are the held-out rows; without, a public
   pseudo-random ``test_fraction`` of the common ids (from the job's ``seed``; not stratified,
   since the label is at one party only). Both parts keep the canonical order.
3. One round: each data party announces the numbers of training and held-out rows (or its
   error) to every party, so that compute parties and the dealer, which take no part in the
   intersection, know the shapes; every party raises the same error if the intersection failed
   or left no training or no held-out row.

:func:`plaintext_alignment` applies steps 1 and 2 to ids in the clear (the centralised baseline).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from covault.errors import CovaultError
from covault.jobs.errors import JobError
from covault.jobs.schema import announce
from covault.randomness.public import public_permutation


@dataclass(frozen=True)
class Alignment:
    """Agreed row counts, the intersection's figures, and (at data parties) the positions of
    the training and held-out rows in the party's tagged ids (:meth:`VerticalRows.tagged_ids`)."""

    train_rows: int
    test_rows: int
    intersection: int
    sizes: dict[str, int]
    train_index: np.ndarray | None = None
    test_index: np.ndarray | None = None


def split_common(common: Sequence[str], has_test_files: bool, fraction: float, seed: int):
    """Positions in ``common`` (canonical order) of the training and the held-out rows."""
    n = len(common)
    if has_test_files:
        test = np.array([i for i, t in enumerate(common) if t.startswith("test:")], dtype=np.int64)
        train = np.array([i for i, t in enumerate(common) if t.startswith("train:")], dtype=np.int64)
        return train, test
    order = public_permutation(seed, "split/vertical", n) if n else np.arange(0)
    k = round(fraction * n)
    return np.sort(order[k:]).astype(np.int64), np.sort(order[:k]).astype(np.int64)


def align(job, session, rows) -> Alignment:
    """Steps 1-3 of the module docstring; ``rows`` is this party's VerticalRows or None."""
    from covault.protocols.psi import intersect

    me = session.party
    status: dict = {}
    result = None
    if me in job.data:
        try:
            result = intersect(session.net, list(job.data_parties), rows.tagged_ids())
        except CovaultError as exc:
            status = {"error": f"private set intersection of the row ids ({job.id_column!r}): {exc}"}
        else:
            train, test = split_common(result.ids, bool(job.test), job.test_fraction, job.seed)
            status = {
                "train_rows": len(train),
                "test_rows": len(test),
                "intersection": result.intersection,
                "sizes": dict(result.sizes),
            }
    statuses = announce(session, status)
    data = [statuses[p] for p in job.data_parties]
    errors = [s["error"] for s in data if s.get("error")]
    if errors:
        raise JobError(errors[0])
    first = data[0]
    for p, s in zip(job.data_parties, data):
        if any(s.get(k) != first.get(k) for k in ("train_rows", "test_rows", "intersection")):
            raise JobError(f"data party {p!r} reports another row alignment than {job.data_parties[0]!r}")
    ntr, nte = int(first["train_rows"]), int(first["test_rows"])
    if ntr < 2:
        raise JobError(
            f"only {ntr} training rows are common to every data party (intersection of {job.id_column!r}: "
            f"{first['intersection']} ids); training needs more"
        )
    if nte < 1:
        raise JobError(
            "no held-out row is common to every data party: give test files with shared ids or set "
            "test_fraction > 0"
        )
    out = Alignment(ntr, nte, int(first["intersection"]), {k: int(v) for k, v in first["sizes"].items()})
    if result is None:
        return out
    idx = np.asarray(result.index, dtype=np.int64)
    return Alignment(out.train_rows, out.test_rows, out.intersection, out.sizes, idx[train], idx[test])


def plaintext_alignment(job, tagged: dict[str, list[str]]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Steps 1-2 in the clear: ``{party: (train positions, test positions)}`` in its tagged ids."""
    common = set.intersection(*(set(v) for v in tagged.values()))
    ordered = sorted(common)
    train, test = split_common(ordered, bool(job.test), job.test_fraction, job.seed)
    out = {}
    for p, ids in tagged.items():
        where = {t: i for i, t in enumerate(ids)}
        pos = np.array([where[t] for t in ordered], dtype=np.int64)
        out[p] = (pos[train], pos[test])
    return out
