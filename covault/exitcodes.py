"""Exit statuses of the ``covault`` commands (``covault.cli`` and the local launcher
``covault.launch.consortium`` share them)."""

EXIT_OK = 0  # success
EXIT_FAILED = 1  # the computation failed here or at a peer (the error names it)
EXIT_USAGE = 2  # bad arguments, config, job file, certificate or script: nothing was sent
EXIT_INTERRUPTED = 130  # Ctrl-C
EXIT_TERMINATED = 143  # SIGTERM
