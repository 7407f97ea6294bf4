"""Exceptions raised by covault. Every message names the problem and, where known, the party."""

from __future__ import annotations


class CovaultError(Exception):
    """Base class of every error covault raises on purpose."""


class EncodingError(CovaultError, ValueError):
    """A value cannot be encoded in the fixed-point ring (NaN, inf, or out of range)."""


class ShapeError(CovaultError, ValueError):
    """Operands have shapes that do not fit the operation."""


class PartyError(CovaultError, ValueError):
    """A party name is unknown or not allowed in this role."""


class ProtocolError(CovaultError):
    """A protocol was used in a way it does not support, or parties disagree."""


class PeerError(CovaultError, ConnectionError):
    """A peer vanished, stalled past the timeout, or sent something malformed."""

    def __init__(self, party: str, message: str):
        self.party = party
        super().__init__(f"party {party!r}: {message}")


class PsiError(CovaultError, ValueError):
    """Private set intersection cannot go on: bad, duplicate or missing ids at some party, or an
    empty intersection. Raised alike at every party taking part."""


class BoundError(CovaultError, OverflowError):
    """A result may leave the ring's exact range: the public bound of an operand (its declared or
    derived magnitude) says the operation could wrap around. Names the operation and the bound."""


class ResourceError(CovaultError, MemoryError):
    """The computation would need more memory than this host has available; raised before it
    starts, with the estimate, what it grows with, and what the host has."""


class PrivacyBudgetError(CovaultError):
    """A differential-privacy release would take a data owner's spent epsilon past the cap of
    its policy; raised before anything is computed or sent. Names the owner, the cap, what is
    spent and what remains (``owner``, ``cap``, ``spent``, ``remaining``, ``requested``)."""

    def __init__(self, owner: str, cap: float, spent: float, requested: float, what: str = "this release"):
        self.owner, self.cap, self.spent, self.requested, self.what = owner, cap, spent, requested, what
        self.remaining = max(cap - spent, 0.0)
        super().__init__(
            f"privacy budget of data owner {owner!r}: {what} needs epsilon {requested:g}, but the cap is "
            f"{cap:g}, {spent:g} is spent and {self.remaining:g} remains"
        )

    def __reduce__(self):
        return type(self), (self.owner, self.cap, self.spent, self.requested, self.what)


class CovaultWarning(UserWarning):
    """Base class of every warning covault issues on purpose."""


class TrainingDivergedWarning(CovaultWarning):
    """The revealed training loss shows that training diverged (a loss that is not finite, below
    zero, or far above the trivial model's); the message gives the epoch, the loss and the
    learning rate to lower."""
