"""Conversions between arithmetic (additive mod 2^64) and boolean (XOR) sharings.

Written once on top of the protocol primitives (``msb_addends``, ``and_``, ``b2a_bit``); runs
under every protocol and at the 2pc dealer (which holds ``(0, *shape)`` arrays and deals).

**A2B** (:func:`a2b`, Demmler-Schneider-Zohner ABY, NDSS 2015; ABY3, Mohassel-Rindal CCS
2018): ``msb_addends`` gives XOR-shared addends ``a + b = x``; a Kogge-Stone parallel-prefix
adder (Kogge-Stone 1973) computes every carry:

1. ``G = a & b``, ``P = a ^ b`` (one AND round).
2. For ``d = 1, 2, 4, 8, 16``: ``G ^= P & (G << d)``, ``P &= P << d``, both ANDs in one
   ``and_`` call on concatenated words (one round each).
3. ``d = 32``: ``G ^= P & (G << 32)`` (no propagate needed).
4. ``x = a ^ b ^ (G << 1)`` (local).

**B2A** (:func:`b2a`): the 64 bits of every word are converted in ONE ``b2a_bit`` call on a
``(64, *shape)`` bit tensor and recombined as ``sum_i 2^i [x_i]``.

Cost per element (bytes SENT by each compute party; 2pc dealer bytes are offline):

=============  ===============================  ================  ======================
operation      2pc online / dealer              rep3              rounds 2pc / rep3
=============  ===============================  ================  ======================
a2b            192 / 96                         8 + 96 = 104      7 / 8
b2a (64 bit)   8 / 512 (one daBit per bit)      1024              1 / 2
bit_to_arith   1/8 / 8                          16                1 / 2
=============  ===============================  ================  ======================

(a2b: levels 0 and 6 AND one word, levels 1-5 two words per element; a 2pc AND opens two
words per operand word, a rep3 AND reshares one. b2a moves 64 bits per element through
``b2a_bit``: its per-bit cost times 64, and temporary memory of ``64 * 8`` bytes per element
per share component.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from covault.errors import CovaultError

if TYPE_CHECKING:
    from covault.booltensor import BooleanTensor
    from covault.protocols.base import Protocol
    from covault.tensor import SecretTensor

U64 = np.uint64


def add_words(proto: Protocol, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Boolean shares of ``a + b (mod 2^64)`` for boolean-shared uint64 words (Kogge-Stone)."""
    shape = a.shape
    n = int(np.prod(shape[1:], dtype=np.int64))
    a, b = a.reshape(shape[0], n), b.reshape(shape[0], n)
    g = proto.and_(a, b)
    p = a ^ b
    s = p.copy()
    for lvl in range(5):
        d = U64(1 << lvl)
        u = np.concatenate([p, p], axis=1)
        v = np.concatenate([g << d, p << d], axis=1)
        r = proto.and_(u, v)
        g ^= r[:, :n]
        p = r[:, n:]
    g ^= proto.and_(p, g << U64(32))
    s ^= g << U64(1)
    return s.reshape(shape)


def a2b_shares(proto: Protocol, x: np.ndarray) -> np.ndarray:
    """Boolean shares (int64 words) of the ring values of arithmetic shares ``x``."""
    a, b = proto.msb_addends(x)
    return add_words(proto, a.view(U64), b.view(U64)).view(np.int64)


def b2a_shares(proto: Protocol, w: np.ndarray) -> np.ndarray:
    """Arithmetic shares of the 64-bit words whose boolean shares are ``w`` (int64)."""
    shape = w.shape[1:]
    shifts = np.arange(64, dtype=np.uint64).reshape((1, 64) + (1,) * len(shape))
    bits = ((w.view(U64)[:, None] >> shifts) & U64(1)).astype(np.uint8)
    arith = proto.b2a_bit(bits)  # (k, 64, *shape) int64 0/1 shares
    arith <<= shifts.astype(np.int64)
    return arith.sum(axis=1)


def _check(b: object) -> None:
    from covault.booltensor import BooleanTensor

    if not isinstance(b, BooleanTensor):
        raise CovaultError(f"expected a BooleanTensor, got {type(b).__name__}")


def a2b(x: SecretTensor) -> BooleanTensor:
    """XOR shares of the 64-bit two's-complement encoding of ``x`` (its ``frac`` is kept)."""
    from covault.booltensor import BooleanTensor

    return BooleanTensor(x.session, a2b_shares(x.proto, x.shares), x.frac)


def b2a(b: BooleanTensor) -> SecretTensor:
    """Arithmetic shares of the 64-bit words of ``b`` (fixed point with ``b.frac`` bits). The
    words may be anything, so the result's bound is untracked: set it with ``with_bound``
    where the caller knows one."""
    from covault.tensor import SecretTensor

    _check(b)
    return SecretTensor(b.session, b2a_shares(b.proto, b.shares), b.frac)


def bit_to_arith(b: BooleanTensor) -> SecretTensor:
    """Integer 0/1 secret tensor of the lowest bit of every word of ``b``."""
    from covault.tensor import SecretTensor

    _check(b)
    low = (b.shares & np.int64(1)).astype(np.uint8)
    return SecretTensor(b.session, b.proto.b2a_bit(low), 0, 1.0)
