"""The errors of secure aggregation: each names the round and the client (or the count).

Each takes its whole message (so that an error raised in a party process is rebuilt as itself
by the launcher); :func:`too_few` and :func:`malformed` write the messages.
"""

from __future__ import annotations

from covault.errors import ProtocolError


class SecAggError(ProtocolError):
    """Secure aggregation cannot go on (a refused request, a key that does not match)."""


class TooFewSurvivorsError(SecAggError):
    """Fewer clients (or shares) are left than the threshold ``t`` needs."""


class MalformedMessageError(SecAggError):
    """A message cannot be parsed or does not fit the round; names the client that sent it."""


def too_few(stage: str, count: int, threshold: int, what: str = "clients survive") -> TooFewSurvivorsError:
    return TooFewSurvivorsError(
        f"secure aggregation, {stage}: only {count} {what}, fewer than the threshold t = {threshold}"
    )


def malformed(stage: str, client: int, problem: str) -> MalformedMessageError:
    return MalformedMessageError(
        f"secure aggregation, {stage}: malformed message from client {client}: {problem}"
    )
