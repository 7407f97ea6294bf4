"""Choosing the protocol of a comparison per operation: secret sharing, garbled circuit or FSS.

``[x > 0]`` of a 2pc tensor can be computed three ways, with opposite costs:

======  =============================================  ======================  ==================
method  how                                            bytes sent per element  one-way delays
======  =============================================  ======================  ==================
``ss``  :func:`covault.ops.compare.greater_than`:      66.4 (dealer),          7 (dealer),
        carry tree over AND triples, B2A               81.9 (dealer, radix-4   4 (radix-4),
                                                       tree), 3,047 (``ot``)   14 (``ot``)
``gc``  :func:`~covault.protocols.gc.convert.          ``80.125 w - 16``       2 (+ base OTs
        gc_compare`: A2Y, carry chain, Y2A             (2,548 at ``w = 32``)   once per pair)
``fss`` :func:`covault.ops.fss.positive`: one masked   ``1293 n / 32`` (keys   1
        opening, a DCF key per element                 from the dealer)
======  =============================================  ======================  ==================

(``w``: the GC word width, 32 or 64 from the operand's bound; ``n``: the FSS domain bits; the
radix-4 tree of :mod:`covault.ops.compare` serves batches of at most
:data:`~covault.ops.compare.FUSED_ELEMENTS` elements with the dealer; bytes are those all
parties send, dealer included; ``ot``: the dealer-free provider. A round in
which both parties send at once costs one one-way delay, ``rtt / 2``; the garbled circuit's
round trip (the evaluator's OT flow, then the garbler's) two; the ``ot`` provider's AND triples
add OT flows that wait for each other: 14 measured.) The time of one call is modelled as

    ``t = delays * rtt / 2 + bytes * n_elements / bandwidth + cpu * n_elements (+ setup)``

with the link's round-trip time and bandwidth given by the caller (:class:`LinkModel`: public,
the same at both parties, so that both choose the same method with no message), ``cpu`` the
seconds per element both parties spend on the method, and ``setup`` the base OTs of a garbled
circuit when no :class:`~covault.protocols.gc.yao.YaoParty` is passed for reuse.
:data:`CPU_SECONDS` holds figures measured on a 2-core x86-64 machine (benchmarks/bench_gc.py,
``benchmarks/results/gc.txt``; ``ss-fused``: ``benchmarks/results/carry.txt``); pass ``cpu=``
to :func:`choose_positive` for another machine (keyed ``ss``, ``ss-fused``, ``ss-ot``, ``gc``,
``fss``: a batch of at most FUSED_ELEMENTS elements with the dealer takes ``ss-fused``).

Where each wins (that table, 2 cores): with a dealer, ``ss`` is cheapest on a fast link and for
large batches (66 bytes, 0.4 us per element); ``gc`` and ``fss`` trade bytes and CPU for
latency and win small batches on a slow link (the model, with base OTs done, puts the
break-even of ``ss`` and ``gc`` near ``n = 450`` at 10 ms RTT, where the radix-4 tree's 4
delays serve (``gc`` again from 1,025 to 1,130 elements, where the binary tree's 7 take over),
and ``n = 5,600`` at 50 ms; measured: ``gc`` ahead at 100
elements, ``ss`` at 10,000, at both). Without a dealer ``gc`` beats ``ss`` at every size:
the OT-made AND triples cost more bytes and CPU than the garbled carry chain.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from covault.errors import BoundError, ProtocolError

if TYPE_CHECKING:
    from covault.protocols.gc.yao import YaoParty
    from covault.tensor import SecretTensor

METHODS = ("ss", "gc", "fss")
DELAYS = {"ss": 7, "ss-fused": 4, "ss-ot": 14, "gc": 2, "fss": 1}  # one-way delays per call
BYTES = {"ss": 66.4, "ss-fused": 81.9, "ss-ot": 3047.0}  # per element; gc and fss: see _bytes
CPU_SECONDS = {"ss": 0.37e-6, "ss-fused": 0.9e-6, "ss-ot": 70e-6, "gc": 20e-6, "fss": 23e-6}  # per element
GC_SETUP_SECONDS = 0.15  # base OTs of a fresh YaoParty (benchmarks/results/gc.txt)


@dataclass(frozen=True)
class LinkModel:
    """The link between the two compute parties: round-trip time in seconds and bandwidth in
    bytes per second (public; the same at both parties)."""

    rtt: float = 0.0
    bandwidth: float = 1e9

    def __post_init__(self) -> None:
        if not (self.rtt >= 0 and self.bandwidth > 0):
            raise ValueError(
                f"LinkModel: rtt must be >= 0 and bandwidth > 0, got {self.rtt}, {self.bandwidth}"
            )


def _key(method: str, provider: str | None, n: int = 0) -> str:
    """The cost entry of ``method``: ``ss`` splits into ``ss-ot`` (dealer-free), ``ss-fused``
    (the dealer's radix-4 tree, up to FUSED_ELEMENTS elements) and ``ss`` (the binary tree)."""
    if method != "ss":
        return method
    if provider == "ot":
        return "ss-ot"
    from covault.ops.compare import FUSED_ELEMENTS

    return "ss-fused" if provider == "dealer" and n <= FUSED_ELEMENTS else "ss"


def _bytes(method: str, provider: str | None, width: int, fss_bits: int, n: int) -> float:
    if method == "gc":
        return 80.125 * width - 16
    if method == "fss":
        return 1293.0 * fss_bits / 32
    return BYTES[_key(method, provider, n)]


def estimate(
    method: str,
    n: int,
    link: LinkModel,
    *,
    provider: str | None = "dealer",
    width: int = 32,
    fss_bits: int = 32,
    setup: bool = False,
    cpu: dict[str, float] | None = None,
) -> float:
    """Modelled seconds of ``[x > 0]`` on ``n`` elements by ``method`` (module docstring);
    ``setup``: count the garbled circuit's base OTs."""
    if method not in METHODS:
        raise ValueError(f"comparison method must be one of {METHODS}, got {method!r}")
    key = _key(method, provider, n)
    per = {**CPU_SECONDS, **(cpu or {})}[key]
    t = DELAYS[key] * link.rtt / 2 + n * (_bytes(method, provider, width, fss_bits, n) / link.bandwidth + per)
    return t + (GC_SETUP_SECONDS if method == "gc" and setup else 0.0)


def candidates(x: SecretTensor) -> tuple[str, ...]:
    """The methods available for ``x``: ``ss`` always; ``gc`` in 2pc; ``fss`` in 2pc with a
    dealer and a finite bound of at most 63 bits."""
    from covault.ops import fss

    s = x.session
    if s.protocol_name != "2pc":
        return ("ss",)
    out = ["ss", "gc"]
    if fss.available(x) and x.bound is not None and _fss_bits(x) <= 63:
        out.append("fss")
    return tuple(out)


def _fss_bits(x: SecretTensor) -> int:
    from covault.ops import fss

    try:
        return fss.domain_bits(x, "positive")
    except (BoundError, ProtocolError):  # no bound, beyond 63 bits, or no dealer: not a candidate
        return 64


def choose_positive(
    x: SecretTensor,
    link: LinkModel,
    *,
    gc_ready: bool = False,
    cpu: dict[str, float] | None = None,
) -> str:
    """The method of least modelled time for ``[x > 0]`` (ties go to ``ss``, then ``gc``).
    Every party computes the same answer from public values only: ``x``'s shape and bound, the
    session's protocol and provider, ``link``, and ``gc_ready`` (the compute parties reuse a
    :class:`~covault.protocols.gc.yao.YaoParty`: no base OTs to count; the same at every party,
    the dealer included, which holds none)."""
    from covault.protocols.gc.convert import word_width

    kw = {"provider": x.session.provider_name, "width": word_width(x), "fss_bits": _fss_bits(x)}
    times = {
        m: estimate(m, x.size, link, setup=not gc_ready, cpu=cpu, **kw)  # type: ignore[arg-type]
        for m in candidates(x)
    }
    return min(times, key=lambda m: (times[m], METHODS.index(m)))


def positive(
    x: SecretTensor,
    *,
    method: str = "auto",
    link: LinkModel | None = None,
    yao: YaoParty | None = None,
    gc_ready: bool = False,
) -> SecretTensor:
    """Shares of ``[x > 0]`` (integers 0/1, frac 0) by ``method`` (``"auto"``: by
    :func:`choose_positive` for ``link``, default a zero-latency 1 GB/s link, and the public
    ``gc_ready``). ``yao``: this compute party's :class:`~covault.protocols.gc.yao.YaoParty` to
    reuse for ``gc`` (None at the dealer). Every method gives the same values: they differ in
    rounds, bytes and CPU only."""
    if method == "auto":
        method = choose_positive(x, link or LinkModel(), gc_ready=gc_ready)
    if method == "ss":
        return x > 0
    if method not in candidates(x):
        s = x.session
        raise ProtocolError(
            f"comparison method {method!r} at party {s.party!r}: not available for protocol "
            f"{s.protocol_name!r} with provider {s.provider_name!r} (available: {candidates(x)})"
        )
    if method == "gc":
        from covault.protocols.gc.convert import gc_compare

        return gc_compare(x, link=yao)
    from covault.ops import fss

    return fss.positive(x)
