"""Launching party processes on one machine, under one supervisor.

- :mod:`covault.launch.processes`: ``covault.run(..., transport="tcp")``: one ``multiprocessing``
  child per party, reporting results and errors over pipes.
- :mod:`covault.launch.consortium`: ``covault run CONFIG SCRIPT``: one ``covault party``
  subprocess per party of a consortium config, judged by exit code.
- :mod:`covault.launch.supervisor`: what both share: the grace the other parties get after a
  failure, and stopping every process (terminate, then kill) so that none outlives its run.
"""
