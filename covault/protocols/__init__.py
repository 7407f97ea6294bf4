"""Secret-sharing protocols. ``Protocol`` is the interface; ``additive`` (2pc) and ``replicated``
(rep3) implement it; comparison, conversion and non-linear protocols are written once on top."""
