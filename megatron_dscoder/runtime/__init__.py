"""The training process's life: when to stop (SIGTERM, a time budget), Python's garbage collector
under ``--manual-gc``, and the exit marker the launcher reads to tell a saved stop from a crash."""
