"""covault: secure multi-party computation for joint machine learning."""

from covault.encoding import FixedPoint
from covault.errors import (
    BoundError,
    CovaultError,
    EncodingError,
    PartyError,
    PeerError,
    ProtocolError,
    ShapeError,
)
from covault.runtime import run
from covault.session import Session
from covault.tensor import SecretTensor, concatenate, maximum, minimum, stack, where

__all__ = [
    "BoundError",
    "CovaultError",
    "EncodingError",
    "FixedPoint",
    "PartyError",
    "PeerError",
    "ProtocolError",
    "SecretTensor",
    "Session",
    "ShapeError",
    "concatenate",
    "maximum",
    "minimum",
    "run",
    "stack",
    "where",
]
__version__ = "0.1.0"
