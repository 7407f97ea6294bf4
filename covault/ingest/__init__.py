"""What a data owner lets into a joint computation: its tables, its policy, its transforms.

Everything here runs at the owner, before anything leaves it: connectors read a table
(:mod:`covault.ingest.connectors`), the owner's policy keeps, drops or protects columns and may
refuse the job (:mod:`covault.ingest.policy`, :mod:`covault.ingest.pii`), and the job's
transforms turn the kept columns into the numbers that are secret-shared
(:mod:`covault.ingest.transforms`). See ``docs/jobs.md``.
"""
