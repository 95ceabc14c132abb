"""The per-request working directory: files in before the run, created or changed files out
after it, and nothing left behind for the next request."""

import base64
import itertools
import os
import shutil

HOME = "/home/pyodide"
_ROOT = "/tmp/pyodide-pool"
# Mutated in place, never rebound: the isolation reset restores module globals.
_numbers = itertools.count(1)


def prepare():
    """Creates the root of the run directories (before the isolation baseline is taken)."""
    os.makedirs(_ROOT, exist_ok=True)


class WorkDir:
    def __init__(self, files, max_file_bytes):
        self.path = f"{_ROOT}/run-{next(_numbers)}"
        self.max_file_bytes = max_file_bytes
        self._given = {}
        os.mkdir(self.path)
        for entry in files:
            content = base64.b64decode(entry["content_b64"])
            target = os.path.join(self.path, entry["path"])
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "wb") as handle:
                handle.write(content)
            self._given[entry["path"]] = content
        os.chdir(self.path)

    def collect(self):
        """Files created or changed under the directory, content capped at max_file_bytes."""
        if not self._given and not os.listdir(self.path):
            return []  # the common case, without a walk
        changed = []
        for folder, _dirs, names in os.walk(self.path):
            for name in names:
                full = os.path.join(folder, name)
                relative = os.path.relpath(full, self.path)
                with open(full, "rb") as handle:
                    content = handle.read()
                if self._given.get(relative) == content:
                    continue
                entry = {"path": relative, "size": len(content)}
                if len(content) > self.max_file_bytes:
                    entry["content_b64"] = None
                    entry["truncated"] = True
                else:
                    entry["content_b64"] = base64.b64encode(content).decode("ascii")
                changed.append(entry)
        return sorted(changed, key=lambda entry: entry["path"])

    def remove(self):
        os.chdir(HOME)
        try:
            os.rmdir(self.path)  # empty: the common case
        except OSError:
            shutil.rmtree(self.path, ignore_errors=True)
