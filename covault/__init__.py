"""covault: secure multi-party computation for joint machine learning."""

from covault.encoding import FixedPoint
from covault.errors import (
    CovaultError,
    EncodingError,
    PartyError,
    PeerError,
    ProtocolError,
    ShapeError,
)
from covault.runtime import run
from covault.session import Session
from covault.tensor import SecretTensor, concatenate, stack, where

__all__ = [
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
    "run",
    "stack",
    "where",
]
__version__ = "0.1.0"
