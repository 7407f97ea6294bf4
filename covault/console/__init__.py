"""The operator's console of one party (``covault console --as NAME --jobs DIR``): a local web
page with the jobs of a folder, their plans at this party and approve / reject, their runs and
reports, the party's audit trail with its verification, and its certificate (``docs/console.md``).

It serves on the loopback interface only, to whoever holds the one-time token printed at start
(:mod:`covault.console.auth`); every page reads the party's own files through
:mod:`covault.jobs.approvals`, and a run is a ``covault party`` process (:mod:`.runner`).
Needs the ``console`` extra (Starlette, uvicorn, Jinja2, python-multipart).
"""
