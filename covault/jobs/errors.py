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
