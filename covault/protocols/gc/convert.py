"""Arithmetic shares into garbled circuits and back (A2Y / Y2A, as in ABY), on 2pc tensors.

Demmler, Schneider, Zohner, "ABY", NDSS 2015. For ``x = x0 + x1`` (mod 2^64) held by P0 (the
garbler) and P1 (the evaluator):

- **A2Y**: each party's share is an input of the circuit (the garbler's labels sent, the
  evaluator's by OT; :class:`~covault.protocols.gc.yao.YaoParty`), and the circuit begins with
  an adder: the garbled wires carry ``x`` as a ``width``-bit word (exact when
  ``|x| < 2^(width-1)`` ring units).
- **Y2A**: by output translation in the garbler's one flow (:meth:`YaoParty.run` with
  weights): for each output wire the garbler sends two 8-byte entries, indexed by the
  label's permute bit, ``H(W_v)_low64 + w v + r``; the evaluator opens the one its label
  unlocks and holds ``w v + r``, the garbler ``-r`` (``r`` uniform in Z_2^64). This is the
  subtract-a-random-mask decoding of ABY's Y2A without its extra round; bits already
  XOR-shared convert by one correlated OT each (:meth:`YaoParty.to_arith`, ABY's B2A).

:func:`gc_compare` is ``[x > 0]`` this way, with the adder folded into the comparison: the
parties input ``-x0`` and ``-x1`` and the circuit outputs the top bit of their sum (the carry
chain only, ``width - 1`` AND gates), since ``x > 0`` exactly when ``-x < 0`` (for every ``x``
but ``-2^(width-1)``, beyond the ring's exact range). :func:`gc_apply` runs any word-to-word
circuit on ``x`` (adder, then the circuit, then Y2A of the result).

``width`` is 32 when ``x``'s public bound keeps it within ``[-2^31, 2^31)`` ring units (as the
secret-sharing comparisons of :mod:`covault.ops.compare` decide), else 64. Per element, width
``w``: ``w - 1`` AND gates (gc_compare) or ``w - 1`` plus the circuit's (gc_apply), ``16 w``
bytes of garbler labels, ``32.125 w`` bytes of OT, 32 bytes per AND gate and 16 per output bit
(Y2A); rounds: base OTs once per :class:`YaoParty`, then ONE round trip (the evaluator's OT
flow, the garbler's garbling flow) whatever the width: 2548 bytes per element at ``w = 32``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from covault.errors import ProtocolError
from covault.protocols.gc import builders
from covault.protocols.gc.circuit import Builder, Circuit, to_bits
from covault.protocols.gc.yao import EVALUATOR, GARBLER, YaoParty, signed_weights
from covault.protocols.ot.channel import session_channel

if TYPE_CHECKING:
    from covault.session import Session
    from covault.tensor import SecretTensor

Body = Callable[[Builder, list[int]], list[int]]


def gc_party(session: Session, **kwargs: object) -> YaoParty | None:
    """This party's end of garbled computation in a 2pc session: P0 garbles, P1 evaluates; None
    at the other parties (the dealer, data parties), which take no part. ``kwargs`` go to
    :class:`YaoParty` (``chunk``)."""
    if session.protocol_name != "2pc":
        raise ProtocolError(
            f"garbled circuits at party {session.party!r}: they run between the two compute parties "
            f"of protocol '2pc', not {session.protocol_name!r}"
        )
    if session.party not in session.compute_parties:
        return None
    role = GARBLER if session.party == session.compute_parties[0] else EVALUATOR
    return YaoParty(session_channel(session), role, **kwargs)  # type: ignore[arg-type]


def word_width(x: SecretTensor) -> int:
    """32 when ``x``'s bound keeps every value within ``[-2^31, 2^31)`` ring units, else 64."""
    b = x.bound
    return 32 if b is not None and 0 < b and b * 2.0**x.frac + 1 <= 2.0**31 else 64


def _party(x: SecretTensor, link: YaoParty | None) -> YaoParty | None:
    if link is not None:
        return link
    return gc_party(x.session)


def compare_circuit(width: int) -> Circuit:
    """``msb(u + v)`` of two ``width``-bit words, the garbler's ``u`` and the evaluator's ``v``."""
    b = Builder()
    u, v = b.input(GARBLER, width), b.input(EVALUATOR, width)
    return b.build([builders.msb_of_sum(b, u, v)])


def apply_circuit(width: int, body: Body) -> Circuit:
    """``body(u + v)`` (a word in, a word out) of two ``width``-bit words."""
    b = Builder()
    u, v = b.input(GARBLER, width), b.input(EVALUATOR, width)
    return b.build(body(b, builders.add(b, u, v)))


def gc_compare(x: SecretTensor, *, link: YaoParty | None = None) -> SecretTensor:
    """``[x > 0]`` (0/1 integers, frac 0) of a 2pc tensor by a garbled circuit (A2Y into the
    carry chain of ``-x0 + -x1``, Y2A of its top bit). ``link``: a :class:`YaoParty` to reuse
    (its base OTs done), else a fresh one."""
    party = _party(x, link)
    if party is None:
        return x._new(np.zeros((0, *x.shape), dtype=np.int64), 0, 1.0)
    width = word_width(x)
    bits = to_bits(-x.shares[0], width)
    res = party.run(compare_circuit(width), bits, np.array([1], dtype=np.int64))
    return x._new(res.reshape(1, *x.shape), 0, 1.0)


def gc_apply(
    x: SecretTensor,
    body: Body,
    *,
    frac: int | None = None,
    bound: float | None = None,
    link: YaoParty | None = None,
) -> SecretTensor:
    """``body`` applied to ``x`` as a two's-complement word (A2Y, the circuit, Y2A of the word it
    returns, read as signed). ``frac`` / ``bound``: the result's (default: ``x``'s)."""
    party = _party(x, link)
    frac = x.frac if frac is None else frac
    bound = x.bound if bound is None else bound
    if party is None:
        return x._new(np.zeros((0, *x.shape), dtype=np.int64), frac, bound)
    width = word_width(x)
    circuit = apply_circuit(width, body)
    res = party.run(circuit, to_bits(x.shares[0], width), signed_weights(len(circuit.outputs)))
    return x._new(res.reshape(1, *x.shape), frac, bound)
