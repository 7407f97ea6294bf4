"""Garbled circuits between two parties (semi-honest): Yao with free-XOR and half-gates,
garbled and evaluated one circuit level at a time over many instances at once.

:mod:`~covault.protocols.gc.circuit` (levelised circuits), :mod:`~covault.protocols.gc.builders`
(adders, comparisons, equality, ReLU, max/argmax), :mod:`~covault.protocols.gc.hash` (the
tweaked fixed-key-AES hash), :mod:`~covault.protocols.gc.garble` (garbling and evaluation),
:mod:`~covault.protocols.gc.yao` (the two-party protocol: input labels by OT, output shares),
:mod:`~covault.protocols.gc.convert` (A2Y / Y2A and ``gc_compare`` on secret tensors).
"""
