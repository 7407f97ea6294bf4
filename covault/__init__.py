"""covault: secure multi-party computation for joint machine learning."""

from covault.encoding import FixedPoint
from covault.errors import (
    BoundError,
    CovaultError,
    CovaultWarning,
    EncodingError,
    PartyError,
    PeerError,
    ProtocolError,
    ResourceError,
    ShapeError,
    TrainingDivergedWarning,
)
from covault.runtime import run
from covault.session import Session
from covault.tensor import SecretTensor, concatenate, maximum, minimum, stack, where

__all__ = [
    "BoundError",
    "CovaultError",
    "CovaultWarning",
    "EncodingError",
    "FixedPoint",
    "PartyError",
    "PeerError",
    "ProtocolError",
    "ResourceError",
    "SecretTensor",
    "Session",
    "ShapeError",
    "TrainingDivergedWarning",
    "concatenate",
    "maximum",
    "minimum",
    "run",
    "stack",
    "where",
]
__version__ = "0.1.0"
