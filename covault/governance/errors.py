"""Exceptions of the governance layer."""

from __future__ import annotations

from covault.deploy.config import ConfigError


class GovernanceError(ConfigError):
    """A governance file (approval, audit log) is missing, unreadable or invalid; the message
    names the party and the file."""


class ApprovalError(GovernanceError):
    """A job lacks an approval, or one was rejected, invalid or for another version of the job.
    Raised with the same message at every party of the job, before any of its data is read;
    ``parties``: the parties named, ``keys``: the job keys that differ (a mismatch)."""

    def __init__(self, message: str, *, parties: tuple[str, ...] = (), keys: tuple[str, ...] = ()):
        super().__init__(message)
        self.parties, self.keys = tuple(parties), tuple(keys)


class AuditError(GovernanceError):
    """An audit log cannot be written or read, or a peer's signed log head is invalid."""
