"""The run directory: the working directory of every request. Its files go in and come out
on the JavaScript side (worker/run_files.ts); whatever a run leaves in it is removed with the
rest of the file system's changes, since it is empty in the isolation baseline. The reset
puts the working directory back (isolation.py)."""

import os

# Must match RUN_DIRECTORY in worker/run_files.ts.
PATH = "/tmp/pyodide-pool/run"


def prepare():
    """Creates the run directory (before the isolation baseline is taken)."""
    os.makedirs(PATH, exist_ok=True)


def enter():
    os.chdir(PATH)
