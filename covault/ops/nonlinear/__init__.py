"""Non-linear functions on secret tensors: exp, log, reciprocal, sqrt, inv_sqrt, sigmoid, tanh,
softmax.

Written once on the protocol interface (products, truncation, comparisons from
:mod:`covault.ops.compare`), so every function runs under every protocol. Each function
is a polynomial approximation in a normalised variable, evaluated at higher internal precision
(:mod:`.fixed`), after an exact secret range reduction (a clamp, a power-of-two scaling
(:mod:`.scaling`) or a division of the argument). Accuracy targets and measured errors:
``docs/precision.md``.
"""

from covault.ops.nonlinear.exponential import exp, log, softmax
from covault.ops.nonlinear.logistic import sigmoid, tanh
from covault.ops.nonlinear.roots import inv_sqrt, reciprocal, sqrt

__all__ = ["exp", "inv_sqrt", "log", "reciprocal", "sigmoid", "softmax", "sqrt", "tanh"]
