"""Exceptions of data ingestion."""

from __future__ import annotations

from covault.deploy.config import ConfigError


class DataError(ConfigError):
    """A table cannot be read or fails a check; the message names the source, column and row,
    never a cell's value (it may be shown to the other parties of a job)."""


class PolicyError(DataError):
    """A data owner's policy refuses what a job asks of its data.

    ``rule`` names the policy rule (``allow_columns``, ``pii``, ``outputs.model_to_regions``,
    ``allowed_tasks``, ``reveal_to``, ``min_rows``, ...), ``subject`` the column or party it
    concerns and ``key`` the job key that asks for it (``features``, ``task``, ...), where known.
    """

    def __init__(self, message: str, *, rule: str, subject: str | None = None, key: str | None = None):
        super().__init__(message)
        self.rule, self.subject, self.key = rule, subject, key
