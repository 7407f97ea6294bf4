"""Differentially private statistics of secret columns: sum, count, mean and histogram, with
the noise added inside MPC before the one reveal.

Every method of :class:`PrivateStatistics` runs at every party of a session (SPMD), like the
rest of covault:

1. **Admission**, two rounds. Each data owner named in ``owners`` checks its own ledger
   against its cap (its :class:`Budget`; the other parties pass None) and tells every party
   whether it admits the release. If an owner refuses, every party raises the same
   :class:`~covault.errors.PrivacyBudgetError` naming that owner, the cap, the spent and the
   remaining epsilon, before anything is computed and nothing is charged. Otherwise each owner
   charges its ledger (check and charge in one transaction) and THEN tells every party whether
   it charged: no party computes or reveals a release that some owner has not charged. An
   owner that lost a race to another job in between refuses in this round (the owners that did
   charge keep their charge: the ledgers err towards spent); an owner whose ledger fails makes
   every party raise a :class:`~covault.privacy.ledger.LedgerError`.
2. **Clipping inside MPC** to the public ``bounds`` (``lo <= x <= hi``), so the sensitivity
   follows from public values alone.
3. **Noise inside MPC.** Each compute party samples its part from its own CSPRNG
   (:mod:`covault.privacy.noise`, on the fixed-point grid) and secret-shares it; the parts are
   added to the exact statistic and only the sum is revealed. Sizes (``docs/privacy.md``): a
   Laplace part is the full ``Laplace(b)`` at every compute party (a sum of Laplace variables is
   no Laplace variable, so one honest part must carry the whole noise); a Gaussian part is
   ``N(0, sigma^2 / (m - t))`` for ``m`` compute parties and coalitions of at most ``t``
   (``colluders``, 1 by default: 2pc's compute parties do not collude, rep3 has an honest
   majority), so that the parts of any ``m - t`` parties make up ``N(0, sigma^2)``. A compute
   party that receives the value knows its own part: that is why ``t >= 1`` always.
4. **Reveal** to ``to`` (None: every compute party).

Neighbouring tables differ in one row replaced by another (the number of rows is public in
covault, as every shape is). Sensitivities, for ``d`` columns released together: a sum
``d (hi - lo)`` (L1) or ``sqrt(d) (hi - lo)`` (L2); a count of 0/1 values ``d`` or
``sqrt(d)``; a histogram 2 or ``sqrt(2)`` (one row leaves one bin for another). A mean is
the noisy sum divided by the public row count.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from covault.errors import PrivacyBudgetError
from covault.privacy import mechanisms
from covault.privacy.ledger import Ledger, LedgerError
from covault.privacy.noise import gaussian, laplace
from covault.randomness.prg import PRG, new_seed
from covault.session import Session
from covault.tensor import SecretTensor, maximum, minimum

MECHANISMS = ("laplace", "gaussian")
GAUSSIAN_TAIL = 9.0  # |sample| / sigma never exceeds 8.57 (uniforms >= 2^-53, Box-Muller)
LAPLACE_TAIL = 37.0  # |sample| / scale never exceeds 36.04 (uniforms 2^-53 from 0 and 1)


@dataclass(frozen=True)
class Budget:
    """A data owner's side of a release: its ledger, the cap of its policy
    (``[privacy] max_epsilon``; None: no cap) and the job charged (its fingerprint)."""

    ledger: Ledger
    cap: float | None
    job: str


@dataclass(frozen=True)
class Release:
    """A released statistic: ``value`` at its receivers (None elsewhere), the ``(epsilon,
    delta)`` charged to each of ``owners``, the mechanism, its sensitivity (L1 for Laplace, L2
    for Gaussian), its calibrated ``scale`` (Laplace ``b`` or Gaussian ``sigma``) and
    ``noise_std``, the standard deviation of the noise in each released number (all parts)."""

    value: np.ndarray | None
    what: str
    epsilon: float
    delta: float
    mechanism: str
    sensitivity: float
    scale: float
    noise_std: float
    owners: tuple[str, ...]


@dataclass(frozen=True)
class _Spec:
    what: str
    epsilon: float
    delta: float
    mechanism: str


class PrivateStatistics:
    """DP releases of one session about the rows of ``owners`` (every data owner whose rows the
    statistics use), revealed ``to`` (None: every compute party). ``budget``: this party's, if
    it is one of ``owners`` (the others pass None). ``colluders``: the largest coalition of
    compute parties the Gaussian parts are sized for (module docstring).
    ``testing_without_noise``: for tests against plaintext only; no noise is added and the
    values are NOT private (the ledger is still charged)."""

    def __init__(
        self,
        session: Session,
        *,
        owners: Sequence[str],
        budget: Budget | None = None,
        to: str | Sequence[str] | None = None,
        colluders: int = 1,
        testing_without_noise: bool = False,
    ):
        self.session, self.owners, self.budget, self.to = session, tuple(owners), budget, to
        self.testing_without_noise = bool(testing_without_noise)
        if not self.owners or len(set(self.owners)) != len(self.owners):
            raise ValueError("private statistics: owners must name each data owner whose rows are used, once")
        for o in self.owners:
            session.check_party(o, "data owner of private statistics")
        m = len(session.compute_parties)
        if not isinstance(colluders, int) or not 1 <= colluders < m:
            raise ValueError(
                f"private statistics: colluders must be an integer in [1, {m - 1}] for {m} compute parties"
            )
        self.colluders = colluders

    def sum(
        self, x: SecretTensor, bounds: tuple[float, float], *, epsilon: float, delta: float = 0.0,
        mechanism: str = "laplace", what: str = "noisy sum",
    ) -> Release:  # fmt: skip
        """The sum over rows (axis 0) of ``x`` (``(n,)`` or ``(n, d)``) clipped to ``bounds``,
        with the ``mechanism``'s noise at ``(epsilon, delta)``."""
        spec = _spec("sum", what, epsilon, delta, mechanism)
        lo, hi = _bounds(bounds, spec.what)
        d = _columns(x, spec.what)
        _admit(self, spec)
        exact = _clip(x, lo, hi).sum(axis=0)
        return _release(self, spec, exact, l1=d * (hi - lo), l2=math.sqrt(d) * (hi - lo))

    def mean(
        self, x: SecretTensor, bounds: tuple[float, float], *, epsilon: float, delta: float = 0.0,
        mechanism: str = "laplace", what: str = "noisy mean",
    ) -> Release:  # fmt: skip
        """The mean over rows of ``x`` clipped to ``bounds``: :meth:`sum` divided by the public
        row count (sensitivity, scale and noise those of the sum, over ``n``)."""
        out = self.sum(x, bounds, epsilon=epsilon, delta=delta, mechanism=mechanism, what=what)
        n = x.shape[0]
        value = None if out.value is None else out.value / n
        return Release(
            value, out.what, out.epsilon, out.delta, out.mechanism, out.sensitivity / n, out.scale / n,
            out.noise_std / n, out.owners,
        )  # fmt: skip

    def count(
        self, flags: SecretTensor, *, epsilon: float, delta: float = 0.0, mechanism: str = "laplace",
        what: str = "noisy count",
    ) -> Release:  # fmt: skip
        """The number of rows whose ``flags`` (``(n,)`` or ``(n, d)``; e.g. ``x > 50``) are 1, the
        flags clipped to ``[0, 1]`` unless they are exact 0/1 values already (a comparison's)."""
        spec = _spec("count", what, epsilon, delta, mechanism)
        d = _columns(flags, spec.what)
        _admit(self, spec)
        exact01 = flags.frac == 0 and flags.bound is not None and flags.bound <= 1
        bits = flags if exact01 else _clip(flags, 0.0, 1.0)
        return _release(self, spec, bits.sum(axis=0), l1=float(d), l2=math.sqrt(d))

    def histogram(
        self, x: SecretTensor, edges: Sequence[float], *, epsilon: float, delta: float = 0.0,
        mechanism: str = "laplace", what: str = "noisy histogram",
    ) -> Release:  # fmt: skip
        """Counts of the column ``x`` (``(n,)``) in the bins ``[e_i, e_(i+1))`` of the public
        increasing ``edges`` (``k + 1`` edges, ``k`` bins); a value below ``e_0`` counts in the
        first bin, one from ``e_k`` on in the last. ``k - 1`` comparisons per row."""
        spec = _spec("histogram", what, epsilon, delta, mechanism)
        e = np.asarray(edges, dtype=np.float64)
        if e.ndim != 1 or len(e) < 2 or not np.all(np.isfinite(e)) or np.any(np.diff(e) <= 0):
            raise ValueError(f"histogram ({spec.what}): edges must be at least 2 finite increasing numbers")
        if x.ndim != 1 or x.shape[0] == 0:
            raise ValueError(
                f"histogram ({spec.what}): the column must be 1-d with rows, got shape {x.shape}"
            )
        _admit(self, spec)
        session, n, inner = self.session, x.shape[0], e[1:-1]
        if len(inner):
            wide = x.reshape(n, 1).broadcast_to((n, len(inner)))
            top = float(np.abs(inner).max()) + 1.0
            at_least = (wide >= _constant(wide, inner.reshape(1, -1), top)).sum(axis=0)
            counts = _differences(session, at_least, n)
        else:
            counts = session.constant(np.array([n]), integer=True)
        return _release(self, spec, counts, l1=2.0, l2=math.sqrt(2.0))


def _differences(session: Session, at_least: SecretTensor, n: int) -> SecretTensor:
    """Bin counts from the counts at or above each inner edge: ``[n - c_1, c_1 - c_2, ..., c_k]``."""
    from covault.tensor import concatenate

    upper = concatenate([session.constant(np.array([n]), integer=True), at_least])
    lower = concatenate([at_least, session.constant(np.zeros(1, dtype=np.int64), integer=True)])
    return (upper - lower).with_bound(float(n) + 1.0)


def _spec(op: str, what: str, epsilon: float, delta: float, mechanism: str) -> _Spec:
    where = f"{op} ({what})"
    if mechanism not in MECHANISMS:
        raise ValueError(f"{where}: mechanism must be one of {MECHANISMS}, got {mechanism!r}")
    if not isinstance(epsilon, int | float) or not math.isfinite(epsilon) or epsilon <= 0:
        raise ValueError(f"{where}: epsilon must be a finite number > 0, got {epsilon!r}")
    if mechanism == "gaussian" and not (isinstance(delta, int | float) and 0 < delta < 1):
        raise ValueError(f"{where}: the gaussian mechanism needs delta in (0, 1), got {delta!r}")
    if mechanism == "laplace" and delta != 0:
        raise ValueError(f"{where}: the laplace mechanism is (epsilon, 0)-DP; pass delta=0, got {delta!r}")
    return _Spec(what, float(epsilon), float(delta), mechanism)


def _bounds(bounds, what: str) -> tuple[float, float]:
    try:
        lo, hi = (float(b) for b in bounds)
    except (TypeError, ValueError):
        raise ValueError(f"{what}: bounds must be two numbers (lo, hi), got {bounds!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"{what}: bounds must be finite with lo < hi, got {bounds!r}")
    return lo, hi


def _columns(x: SecretTensor, what: str) -> int:
    if x.ndim not in (1, 2) or x.shape[0] == 0:
        raise ValueError(f"{what}: the column must be (n,) or (n, d) with rows, got shape {x.shape}")
    return 1 if x.ndim == 1 else int(x.shape[1])


def _clip(x: SecretTensor, lo: float, hi: float) -> SecretTensor:
    """``x`` clipped to ``[lo, hi]`` inside MPC (two comparisons per element); bounds beyond
    the fixed-point range of public operands enter as trivially shared constants."""
    top = max(abs(lo), abs(hi)) + 2.0**-x.session.frac_bits
    return maximum(minimum(x, _constant(x, hi, top)), _constant(x, lo, top)).with_bound(top)


def _constant(x: SecretTensor, value, bound: float):
    """The public ``value`` (a number or an array broadcast to ``x``'s shape) as an operand of
    ``x``: itself inside the fixed-point range of public operands, else a trivially shared
    constant whose magnitude bound is ``bound``."""
    session = x.session
    values = np.broadcast_to(np.asarray(value, dtype=np.float64), x.shape)
    if np.abs(values).max(initial=0.0) < session.fxp.max_abs:
        return value
    enc = session.fxp.encode(values, what="public bound", bound=max(bound, x.bound or 0) + 1)
    shares = session.protocol.add_public(session.protocol.empty(x.shape), enc)
    return SecretTensor(session, shares, session.frac_bits, bound)


def _admit(stats: PrivateStatistics, spec: _Spec) -> None:
    """Two rounds (module docstring, step 1): every owner's check, to every party; then every
    owner's charge (check and charge in one transaction) and whether it charged, to every
    party. A party goes on only when every owner has charged the release."""
    session, budget, owners = stats.session, stats.budget, stats.owners
    if session.party in owners and not isinstance(budget, Budget):
        raise ValueError(
            f"{spec.what}: data owner {session.party!r} must pass its Budget (its ledger, cap and job)"
        )
    _verdicts(stats, spec, lambda: budget.ledger.check(session.party, spec.epsilon, budget.cap, spec.what))
    _verdicts(
        stats,
        spec,
        lambda: budget.ledger.charge_within(
            session.party, spec.epsilon, spec.delta, budget.job, spec.what, budget.cap
        ),
    )


def _verdicts(stats: PrivateStatistics, spec: _Spec, act) -> None:
    """Each owner runs ``act`` on its ledger and sends every party the outcome (done, refused
    with its cap and spent, or ledger failure); every party raises the first refusal or failure."""
    session, owners = stats.session, stats.owners
    me = session.party
    verdict = None
    failure: Exception | None = None
    if me in owners:
        try:
            act()
            verdict = np.array([0.0, 0.0, 0.0], dtype=np.float64)
        except PrivacyBudgetError as exc:
            verdict = np.array([1.0, exc.cap, exc.spent], dtype=np.float64)
        except LedgerError as exc:
            verdict, failure = np.array([2.0, 0.0, 0.0], dtype=np.float64), exc
    sends = {p: [verdict] for p in session.parties if p != me} if verdict is not None else None
    heard = session.net.exchange(sends, recv_from=[o for o in owners if o != me])
    verdicts = {o: heard[o][0] for o in heard}
    if verdict is not None:
        verdicts[me] = verdict
    if failure is not None:
        raise failure
    for owner in owners:
        v = verdicts[owner]
        if v[0] == 1:
            raise PrivacyBudgetError(owner, float(v[1]), float(v[2]), spec.epsilon, spec.what)
        if v[0] != 0:
            raise LedgerError(
                f"{spec.what}: data owner {owner!r} could not use its privacy ledger; nothing released"
            )


def _release(stats: PrivateStatistics, spec: _Spec, exact: SecretTensor, *, l1: float, l2: float) -> Release:
    session = stats.session
    m = len(session.compute_parties)
    if spec.mechanism == "laplace":
        sensitivity, scale = l1, mechanisms.laplace_scale(l1, spec.epsilon)
        part, tail, std = scale, LAPLACE_TAIL * scale, scale * math.sqrt(2.0 * m)
    else:
        sensitivity = l2
        scale = mechanisms.gaussian_sigma(l2, spec.epsilon, spec.delta)
        part = scale / math.sqrt(m - stats.colluders)
        tail, std = GAUSSIAN_TAIL * part, part * math.sqrt(m)
    out = exact
    if stats.testing_without_noise:
        std = 0.0
    else:
        sample = laplace if spec.mechanism == "laplace" else gaussian
        for p in session.compute_parties:
            mine = (
                sample(PRG(new_seed()), exact.shape, part, grid_bits=session.frac_bits)
                if session.party == p
                else None
            )
            out = out + session.input(mine, owner=p, bound=tail + 1.0)
    value = out.reveal(stats.to)
    return Release(
        value, spec.what, spec.epsilon, spec.delta, spec.mechanism, sensitivity, scale, std, stats.owners
    )
