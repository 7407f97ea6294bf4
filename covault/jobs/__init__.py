"""Joint model training across organisations, described by one job file.

- :func:`load_job` reads and validates a job file (:mod:`covault.jobs.spec`);
- :func:`job_program` is the program every party runs (:mod:`covault.jobs.program`);
- :func:`run_local` runs every party on this machine and returns the result dict;
- :func:`format_table`, :func:`write_html_report` present a result;
- :mod:`covault.jobs.demo` writes a ready-made job (breast cancer across hospitals).

Details: ``docs/jobs.md``.
"""

from covault.jobs.connectors import load_table
from covault.jobs.errors import DataError, JobError
from covault.jobs.local import run_local
from covault.jobs.program import job_program
from covault.jobs.report import format_table, render_html, write_html_report
from covault.jobs.spec import Job, load_job, parse_job

__all__ = [
    "DataError",
    "Job",
    "JobError",
    "format_table",
    "job_program",
    "load_job",
    "load_table",
    "parse_job",
    "render_html",
    "run_local",
    "write_html_report",
]
