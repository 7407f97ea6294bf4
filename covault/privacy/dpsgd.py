"""DP-SGD inside MPC: the parameters, the secret clipping bounds, the secret Gaussian noise and
the Poisson-sampled batches that :mod:`covault.ml.dp` trains with.

Per-example clipping of a linear model. Row ``i`` (features ``x_i``, residual ``r_i =
dL/dz_i``) has the gradient ``r_i [x_i, 1]`` of norm ``|r_i| a_i`` with ``a_i = sqrt(|x_i|^2
+ 1)``. Clipping it to norm ``C`` multiplies it by ``min(1, C / (|r_i| a_i))``, which is
exactly clamping the residual to ``[-c_i, c_i]`` with ``c_i = C / a_i``. ``c_i`` depends on
the row alone: :func:`clip_bounds` computes it once per row with the secure inverse square root
(relative error ``<= 7e-6`` plus ``2^-f``), and every step clamps the batch's residuals with
one comparison on ``2B`` elements (:func:`clamp`).

Noise. Each of the ``k`` compute parties samples ``N(0, sigma^2 C^2 / (k - t))`` per
coordinate (:func:`covault.privacy.noise.gaussian`, CSPRNG, on the fixed-point grid) and
secret-shares it; the model gets the sum, variance ``k / (k - t) sigma^2 C^2``. A party knows
its own part; any ``t`` parties that pool theirs can subtract them and still face the parts of
the other ``k - t``: variance ``sigma^2 C^2``, the noise the accountant assumes. ``t =
colluding``: 1 by default (2pc: P0 and P1 do not collude, but either may receive the model and
knows its own part, so each adds the full ``sigma^2 C^2``; rep3: honest majority, each adds
``sigma^2 C^2 / 2``). If ``s > t`` parties pool their parts, ``(k - s) / (k - t)`` of the
variance survives (none if all of them do; they could then open the data as well).

Sampling. Poisson: every row is in a step's batch independently with probability ``q =
batch_size / n``; ``ceil(n / batch_size)`` steps per epoch (the accountant's event,
:mod:`covault.privacy.accountant`). The draws select POSITIONS of the obliviously shuffled
rows, from a seed one compute party draws from ``os.urandom`` and opens to the compute parties
only; the other parties learn each batch's size. No single party knows both the draws and the
shuffle's permutation (2pc: the dealer knows the permutation, not the draws; rep3: no party
knows the permutation), so which rows form a batch stays hidden from every single party.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from covault.errors import BoundError
from covault.privacy import accountant
from covault.privacy.noise import gaussian
from covault.randomness.prg import PRG, SEED_BYTES, new_seed

SEED_WORDS = 6  # 24-bit words that carry a 16-byte seed as integer inputs
MAX_SIGMA_BOUND = 8.7  # |N(0, s^2)| < 8.7 s for every Box-Muller sample of uniforms >= 2^-53


def _number(key: str, value: Any, low: float, high: float | None = None, low_open: bool = True) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low) and (high is None or value < high)
    if not ok:
        span = f"{'(' if low_open else '['}{low:g}, {'inf' if high is None else f'{high:g}'})"
        raise ValueError(f"[privacy] {key} must be a number in {span}, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class DPSGD:
    """DP-SGD parameters: a target ``epsilon`` (the noise multiplier is found by the
    accountant) or a ``noise_multiplier`` (epsilon is computed), ``delta``, the per-example
    clipping norm ``max_grad_norm`` and ``colluding`` (t: how many compute parties may pool
    their noise parts). ``sampling_seed``: a PUBLIC 16-byte seed for the batch draws, for tests
    that replay them in plaintext only (the guarantee then does not hold against anyone who
    knows it); None draws a fresh secret one. ValueError naming the key."""

    epsilon: float | None = None
    delta: float = 1e-5
    max_grad_norm: float = 1.0
    noise_multiplier: float | None = None
    colluding: int = 1
    sampling_seed: bytes | None = None

    def __post_init__(self) -> None:
        if (self.epsilon is None) == (self.noise_multiplier is None):
            raise ValueError("[privacy] needs exactly one of epsilon and noise_multiplier")
        if self.epsilon is not None:
            _number("epsilon", self.epsilon, 0.0)
        if self.noise_multiplier is not None:
            _number("noise_multiplier", self.noise_multiplier, 0.0, low_open=False)
        _number("delta", self.delta, 0.0, 1.0)
        _number("max_grad_norm", self.max_grad_norm, 0.0, 1024.0)
        if not isinstance(self.colluding, int) or isinstance(self.colluding, bool) or self.colluding < 0:
            raise ValueError(f"[privacy] colluding must be a non-negative integer, got {self.colluding!r}")
        if self.sampling_seed is not None and (
            not isinstance(self.sampling_seed, bytes) or len(self.sampling_seed) != SEED_BYTES
        ):
            raise ValueError(f"sampling_seed must be {SEED_BYTES} bytes or None")

    def schedule(self, n: int, batch_size: int, epochs: int) -> tuple[float, int]:
        """``(sample_rate, steps)`` of ``epochs`` epochs over ``n`` rows with expected batch
        ``batch_size``."""
        q = min(1.0, batch_size / n)
        return q, epochs * math.ceil(n / min(batch_size, n))

    def sigma(self, sample_rate: float, steps: int) -> float:
        """The noise multiplier: given, or the accountant's for ``epsilon``."""
        if self.noise_multiplier is not None:
            return float(self.noise_multiplier)
        return accountant.noise_for(float(self.epsilon), float(self.delta), sample_rate, steps)

    def spent(self, sigma: float, sample_rate: float, steps: int) -> float:
        """Epsilon at ``delta`` of the run (inf without noise)."""
        if sigma == 0:
            return math.inf
        return accountant.epsilon_for(sigma, sample_rate, steps, float(self.delta))

    def party_sigma(self, sigma: float, k: int) -> float:
        """The standard deviation each of ``k`` compute parties samples: ``sigma C / sqrt(k - t)``."""
        if self.colluding >= k:
            raise ValueError(
                f"[privacy] colluding = {self.colluding}: at least one of the {k} compute parties must "
                f"stay honest (colluding < {k})"
            )
        return sigma * float(self.max_grad_norm) / math.sqrt(k - self.colluding)


# -- secret values ----------------------------------------------------------------------------------
def clip_bounds(x: Any, max_grad_norm: float) -> Any:
    """Secret ``c_i = C / sqrt(|x_i|^2 + 1)`` (n, 1) for the rows of ``x`` (n, d): clamping row
    ``i``'s residual to ``[-c_i, c_i]`` clips its gradient ``r_i [x_i, 1]`` to norm ``C``.
    BoundError when ``|x_i|^2 + 1`` may leave the inverse square root's domain."""
    f = x.session.frac_bits
    d = x.shape[1]
    top = 2.0 ** (31 - f)
    if d * x.bound**2 + 1 >= top:
        raise BoundError(
            f"DP-SGD clipping: |x_i|^2 + 1 of rows with {d} features bounded by {x.bound:g} may reach "
            f"{d * x.bound**2 + 1:g}, beyond the inverse square root's range {top:g}; scale the features"
        )
    sq = (x * x).sum(axis=1, keepdims=True) + 1.0
    sq = sq.with_bound(min(sq.bound, top - 1))
    return sq.inv_sqrt().with_bound(1.0 + 2.0 ** (1 - f)) * float(max_grad_norm)


def clamp(r: Any, c: Any) -> Any:
    """``clip(r, -c, c)`` for secret ``r`` and ``c >= 0`` of one shape (:func:`clamp_between`:
    one comparison on ``2B`` elements, 8 rounds in 2pc, 4 for ``2B <= 1024``, no truncation)."""
    return clamp_between(r, -c, c)


def piecewise_bounds(c: Any, y: Any) -> tuple[Any, Any]:
    """Per-row bounds ``(lo, hi)`` of :func:`clipped_piecewise_residual` for clip bounds ``c``
    and 0/1 labels ``y`` (n, 1): with ``m = min(1, c)``, ``lo = y (1 - m)``, ``hi = lo + m``
    (one comparison and one product, once per row)."""
    from covault.ops import compare

    m = c - compare.relu(c - 1.0)
    lo = (y * (1.0 - m)).with_bound(1.0 + 2.0 ** (2 - c.session.frac_bits))
    return lo, lo + m


def clipped_piecewise_residual(z: Any, y: Any, lo: Any, hi: Any) -> Any:
    """The residual ``clip(1/2 + z/4, 0, 1) - y`` of logistic regression with the piecewise
    sigmoid, clamped to ``[-c, c]``, in ONE comparison on ``2B`` elements (the sigmoid's own
    cost): for ``y = 0`` it is ``clip(v, 0, min(1, c))``, for ``y = 1`` ``clip(v, 1 - min(1,
    c), 1) - 1`` with ``v = 1/2 + z/4``, i.e. ``clip(v, lo, hi) - y``
    (:func:`piecewise_bounds`). ``f + 2`` fractional bits, like the sigmoid's."""
    quarter = z._new(z.shares, z.frac + 2, None if z.bound is None else z.bound / 4)  # z / 4, exact
    return clamp_between(quarter + 0.5, lo, hi) - y


def clamp_between(v: Any, lo: Any, hi: Any) -> Any:
    """``clip(v, lo, hi)`` for secret ``v`` and secret ``lo <= hi`` of one shape: ``v - relu(v - hi)
    + relu(lo - v)``, one comparison on both halves together (:func:`relu_dealt`)."""
    from covault.tensor import concatenate

    both = relu_dealt(concatenate([v - hi, lo - v]))
    m = v.shape[0]
    return v - both[:m] + both[m:]


def relu_dealt(x: Any) -> Any:
    """``max(x, 0)``: one comparison whose bit goes straight into the product (no truncation),
    run where the protocol runs it cheapest (``Protocol.dealt``: rep3 in its dealt two-party
    view, P0 only dealing, as the piecewise sigmoid; 2pc as :func:`covault.ops.compare.relu`).
    Rounds: 8 in 2pc, 9 in rep3; 4 and 5 for at most 1,024 elements (the radix-4 carry tree of
    :mod:`covault.ops.compare`)."""
    from covault.ops import compare

    width = compare.msb_width(x)

    def run(p: Any, xs: np.ndarray) -> np.ndarray:
        p.prepare_b2a(int(np.prod(xs.shape[1:], dtype=np.int64)))
        bits = compare.msb_bits(p, -xs, width)  # [x > 0]
        return p.b2a_mul(bits, xs)[1]

    return x._new(x.proto.dealt(run, x.shares), x.frac, x.bound)


def secret_noise(session: Any, shape: tuple[int, ...], party_sigma: float) -> Any:
    """Secret noise of ``shape``: the sum of one ``N(0, party_sigma^2)`` sample per compute
    party (CSPRNG, fixed-point grid), each shared by the party that drew it (one input each)."""
    f = session.frac_bits
    bound = MAX_SIGMA_BOUND * party_sigma + 2.0**-f
    total = None
    for p in session.compute_parties:
        mine = gaussian(PRG(new_seed()), shape, party_sigma, grid_bits=f) if session.party == p else None
        part = session.input(mine, p, bound=bound)
        total = part if total is None else total + part
    return total


def _seed_words(seed: bytes) -> np.ndarray:
    value = int.from_bytes(seed, "big")
    return np.array([(value >> (24 * i)) & 0xFFFFFF for i in range(SEED_WORDS)], dtype=np.int64)


def _words_seed(words: np.ndarray) -> bytes:
    value = sum(int(w) << (24 * i) for i, w in enumerate(words))
    return (value & ((1 << 128) - 1)).to_bytes(SEED_BYTES, "big")


def poisson_positions(seed: bytes, n: int, sample_rate: float, steps: int) -> list[np.ndarray]:
    """Each step's batch: the positions ``j < n`` whose 64-bit draw from ``PRG(seed)`` is below
    ``sample_rate 2^64`` (independent per position and step)."""
    prg = PRG(seed)
    cut = np.uint64(min(2**64 - 1, math.floor(sample_rate * 2.0**64)))
    return [np.flatnonzero(prg.words(n, np.uint64) < cut) for _ in range(steps)]


def batch_positions(
    session: Any, n: int, sample_rate: float, steps: int, seed: bytes | None
) -> list[np.ndarray]:
    """The Poisson batches of a run: the true positions at the compute parties (from ``seed``,
    or a fresh seed the first compute party draws and opens to the compute parties alone); at
    the other parties ``arange(size)`` stand-ins of the same sizes (opened to every party)."""
    compute = tuple(session.compute_parties)
    first = compute[0]
    if seed is None:
        words = _seed_words(new_seed()) if session.party == first else None
        opened = session.input(words, first, integer=True, bound=2.0**25).reveal(compute)
        seed = None if opened is None else _words_seed(opened)
    positions = None if seed is None else poisson_positions(seed, n, sample_rate, steps)
    sizes_mine = None
    if session.party == first:
        sizes_mine = np.array([len(p) for p in positions], dtype=np.int64)
    sizes = session.input(sizes_mine, first, integer=True, bound=float(n + 1)).reveal(session.parties)
    if positions is not None:
        return positions
    return [np.arange(int(s)) for s in sizes]
