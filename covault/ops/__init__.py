"""Operations written once against the secret types, for every scheme: comparisons
(:mod:`~covault.ops.compare`), arithmetic/boolean conversions (:mod:`~covault.ops.convert`), the
oblivious shuffle (:mod:`~covault.ops.shuffle`) and the non-linear functions
(:mod:`~covault.ops.nonlinear`)."""
