"""Exceptions of the job layer."""

from __future__ import annotations

from covault.deploy.config import ConfigError
from covault.ingest.errors import DataError as IngestDataError


class JobError(ConfigError):
    """The job file, or a party's data, is invalid; the message names the key, party, file or column.

    Raised before any secret computation starts (the single-class check on the pooled labels,
    which needs the secret-shared labels, is the one exception: it runs before training)."""


class DataError(JobError, IngestDataError):
    """A data file cannot be read as a numeric table; the message names the file, column and row."""


class RefusedError(JobError):
    """A data owner's policy refuses the job: ``party`` refused it under ``rule`` (about the column
    or party ``subject``, asked for by the job key ``key``). Raised at that owner and, with the
    same message (``NAME refused the job: ...``), at every other party after the schema round."""

    def __init__(
        self,
        message: str,
        *,
        party: str | None = None,
        rule: str | None = None,
        subject: str | None = None,
        key: str | None = None,
    ):
        super().__init__(message)
        self.party, self.rule, self.subject, self.key = party, rule, subject, key
