"""The errors of secure aggregation: each names the round and the client (or the count)."""

from __future__ import annotations

from covault.errors import ProtocolError


class SecAggError(ProtocolError):
    """Secure aggregation cannot go on (a refused request, a key that does not match)."""


class TooFewSurvivorsError(SecAggError):
    """Fewer clients (or shares) are left than the threshold ``t`` needs."""

    def __init__(self, stage: str, count: int, threshold: int, what: str = "clients survive"):
        self.stage, self.count, self.threshold = stage, count, threshold
        super().__init__(
            f"secure aggregation, {stage}: only {count} {what}, fewer than the threshold t = {threshold}"
        )


class MalformedMessageError(SecAggError):
    """A message cannot be parsed or does not fit the round; names the client that sent it."""

    def __init__(self, stage: str, client: int, problem: str):
        self.stage, self.client = stage, client
        super().__init__(f"secure aggregation, {stage}: malformed message from client {client}: {problem}")
