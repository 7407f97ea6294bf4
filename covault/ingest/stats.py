"""Secure pooled statistics for the transforms: maximum exponents and means (SPMD).

Every party of the session calls these functions with the same public arguments; the owners
pass their local vectors, every other party None. Each result is opened to every party of
the session (compute parties, the 2pc dealer, data-only parties).

:func:`pooled_max_exponents`: each owner secret-shares one integer per column (its exponent,
:func:`covault.ingest.transforms.exponent_of`); the compute parties take the maximum over the
owners by a comparison tournament (:func:`covault.ops.compare.max_`) and open it. **Revealed:**
the pooled maximum exponent of each column, i.e. the power of two just above the largest
magnitude over all owners; not which owner holds it, nor any owner's own exponent (beyond
what the maximum implies; with a single owner the maximum is that owner's exponent).
**Cost** for ``k`` owners and ``w`` columns: ``k`` inputs (each a shape announcement and a
sharing), ``ceil(log2 k)`` comparison levels of ``floor(m/2) w`` comparisons (``m`` the
candidates left; ``k - 1`` comparisons per column in all, about 48-55 bytes per comparison
per compute party, :mod:`covault.ops.compare`) and one opening. Measured for 3 owners and
30 columns (``docs/transforms.md``, "Cost").

:func:`pooled_means`: each owner secret-shares, per column, ``round(sum 2^(24 - e))`` and its
count of non-missing cells (exact integers; ``e`` the public pooled exponent, so
``|sum 2^-e| <= count``); the shares are added and opened. **Revealed:** the pooled sum (to
``2^(e - 24)``) and the pooled count of non-missing cells of each column; the mean is
``sum / count`` in raw units. **Cost:** ``k`` inputs and one opening, no comparison.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from covault.ingest.errors import DataError
from covault.ingest.table import Table
from covault.ingest.transforms import (
    EMPTY_EXPONENT,
    MAX_EXPONENT,
    ColumnTransform,
    LocalStatistics,
    Preprocessing,
    build_preprocessing,
    local_statistics,
    no_values,
    statistic_columns,
)

EXPONENT_BOUND = 2.0**11  # |exponent| < 2^11 covers EMPTY_EXPONENT .. MAX_EXPONENT
SUM_BITS = 24  # fractional bits of the shared sums (relative to 2^e)
COUNT_LIMIT = 2**31  # cells per column and owner
SUM_BOUND = float(COUNT_LIMIT) * 2.0**SUM_BITS  # |round(sum 2^(SUM_BITS - e))| < 2^55


def _names(names: Sequence[str] | None, width: int) -> list[str]:
    if names is None:
        return [f"#{i + 1}" for i in range(width)]
    if len(names) != width:
        raise DataError(f"{len(names)} column names for {width} columns")
    return [str(n) for n in names]


def _check_owners(session, owners: Sequence[str]) -> tuple[str, ...]:
    owners = tuple(owners)
    if not owners:
        raise DataError("secure statistics need at least one data owner")
    if len(set(owners)) != len(owners):
        raise DataError(f"data owners listed twice: {list(owners)}")
    for p in owners:
        session.check_party(p, "data owner")
    return owners


def _local(session, owners: tuple[str, ...], value: np.ndarray | None, shape: tuple[int, ...], what: str):
    """This party's value (None unless it is one of ``owners``), shape-checked."""
    if session.party not in owners:
        return None
    if value is None:
        raise DataError(f"data owner {session.party!r} passed no {what}")
    arr = np.asarray(value)
    if arr.shape != shape:
        raise DataError(f"data owner {session.party!r}: {what} of shape {arr.shape}, expected {shape}")
    return arr


def _share_all(session, owners: tuple[str, ...], mine: np.ndarray | None, bound: float):
    """Every owner's integer vector (``mine`` at this owner) stacked into one secret tensor
    ``(owners, ...)``: one ``session.input`` per owner."""
    from covault.tensor import stack

    parts = [
        session.input(mine if session.party == p else None, owner=p, integer=True, bound=bound)
        for p in owners
    ]
    return stack(parts, axis=0)


def pooled_max_exponents(
    session,
    owners: Sequence[str],
    local: np.ndarray | None,
    width: int,
    *,
    names: Sequence[str] | None = None,
) -> np.ndarray:
    """The per-column maximum over ``owners`` of their integer exponents, opened to every party
    (module docstring: what is revealed, the cost). ``local``: this owner's ``width``
    exponents (:data:`~covault.ingest.transforms.EMPTY_EXPONENT` for an empty, all-missing or
    all-zero column), None at other parties. ``names`` (optional) name the columns in errors.
    Returns int64 ``(width,)``, the same at every party."""
    owners = _check_owners(session, owners)
    labels = _names(names, width)
    if width == 0:
        return np.zeros(0, dtype=np.int64)
    from covault.ops import compare

    mine = _local(session, owners, local, (width,), "exponents")
    if mine is not None:
        if not np.issubdtype(mine.dtype, np.integer):
            raise DataError(f"data owner {session.party!r}: exponents must be integers, got {mine.dtype}")
        bad = np.flatnonzero((mine < EMPTY_EXPONENT) | (mine > MAX_EXPONENT))
        if bad.size:
            raise DataError(
                f"data owner {session.party!r}: column {labels[bad[0]]!r}: exponent outside "
                f"[{EMPTY_EXPONENT}, {MAX_EXPONENT}]"
            )
        mine = mine.astype(np.int64)
    x = _share_all(session, owners, mine, EXPONENT_BOUND)  # (owners, width)
    best = compare.max_(x, axis=0) if len(owners) > 1 else x[0]
    out = np.asarray(best.reveal(list(session.parties)), dtype=np.int64).reshape(width)
    return out


def pooled_means(
    session,
    owners: Sequence[str],
    local_sum: np.ndarray | None,
    local_count: np.ndarray | None,
    exponents: np.ndarray,
    *,
    names: Sequence[str] | None = None,
) -> np.ndarray:
    """Per-column mean over ``owners`` of their non-missing cells, in raw units, opened to
    every party (module docstring: the pooled sums and counts are revealed). ``local_sum``,
    ``local_count``: this owner's per-column sum and count of non-missing cells (None at
    other parties); ``exponents``: the public pooled exponents of the raw columns
    (:func:`pooled_max_exponents`; every owner's ``max |x| < 2^e``). A column no owner has
    a value in is a DataError naming it. Returns float64 ``(width,)`` at every party."""
    owners = _check_owners(session, owners)
    e = np.asarray(exponents, dtype=np.int64).reshape(-1)
    width = len(e)
    labels = _names(names, width)
    if width == 0:
        return np.zeros(0, dtype=np.float64)
    value, p = None, session.party
    s = _local(session, owners, local_sum, (width,), "sums")
    c = _local(session, owners, local_count, (width,), "counts")
    if s is not None and c is not None:
        s, c = s.astype(np.float64), c.astype(np.int64)
        if not np.isfinite(s).all():
            bad = int(np.flatnonzero(~np.isfinite(s))[0])
            raise DataError(f"data owner {p!r}: column {labels[bad]!r}: the sum is not finite")
        if ((c < 0) | (c >= COUNT_LIMIT)).any():
            bad = int(np.flatnonzero((c < 0) | (c >= COUNT_LIMIT))[0])
            raise DataError(f"data owner {p!r}: column {labels[bad]!r}: count outside [0, 2^31)")
        scaled = np.round(np.ldexp(s, SUM_BITS - e))
        over = np.abs(scaled) > np.maximum(c, 1) * 2.0**SUM_BITS
        if over.any():
            bad = int(np.flatnonzero(over)[0])
            raise DataError(
                f"data owner {p!r}: column {labels[bad]!r}: its values exceed the pooled "
                f"maximum 2^{int(e[bad])}; the exponents and the sums disagree"
            )
        value = np.stack([scaled, c.astype(np.float64)]).astype(np.int64)
    total = _share_all(session, owners, value, SUM_BOUND).sum(axis=0)  # (2, width)
    opened = np.asarray(total.reveal(list(session.parties)), dtype=np.int64).reshape(2, width)
    sums, counts = opened[0], opened[1]
    empty = np.flatnonzero(counts == 0)
    if empty.size:
        raise DataError(no_values(labels[int(empty[0])]))
    return np.ldexp(sums.astype(np.float64), e - SUM_BITS) / counts


def fit_preprocessing(
    session,
    owners: Sequence[str],
    table: Table | LocalStatistics | None,
    inputs: Sequence[tuple[str, str]],
    transforms: Mapping[str, ColumnTransform],
) -> Preprocessing:
    """Resolve the means and auto scale factors over every owner's rows (SPMD): one call of
    :func:`pooled_max_exponents` (raw exponents of the ``"mean"`` columns and output exponents
    of the number columns together) and, when a column imputes the mean, one of
    :func:`pooled_means`. ``table``: this party's rows if it is one of ``owners``, else None
    (columns absent from an owner's table count as empty there: vertical jobs), or its
    :class:`~covault.ingest.transforms.LocalStatistics` computed by the caller. Every party
    gets the same Preprocessing; :func:`covault.ingest.transforms.fit_plain` is the same in
    the clear."""
    inputs = tuple((str(n), str(k)) for n, k in inputs)
    mean_cols, scaled = statistic_columns(inputs, transforms)
    local = None
    if session.party in owners:
        if table is None:
            raise DataError(f"data owner {session.party!r} passed no table")
        local = table if isinstance(table, LocalStatistics) else local_statistics(table, inputs, transforms)
    labels = [f"{n} (raw)" for n in mean_cols] + list(scaled)
    exps = pooled_max_exponents(
        session, owners, None if local is None else local.exponents, len(labels), names=labels
    )
    means: dict[str, float] = {}
    if mean_cols:
        k = len(mean_cols)
        m = pooled_means(
            session,
            owners,
            None if local is None else local.sums,
            None if local is None else local.counts,
            exps[:k],
            names=mean_cols,
        )
        means = {n: float(v) for n, v in zip(mean_cols, m)}
    return build_preprocessing(inputs, transforms, exps, means)
