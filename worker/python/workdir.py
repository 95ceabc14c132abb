"""The per-request working directory: files in before the run, created or changed files out
after it, and nothing left behind for the next request."""

import base64
import os

HOME = "/home/pyodide"
# One directory serves every run: it is empty in the isolation baseline, so whatever a run
# leaves in it is removed with the rest of the file system's changes.
PATH = "/tmp/pyodide-pool/run"


def prepare():
    """Creates the run directory (before the isolation baseline is taken)."""
    os.makedirs(PATH, exist_ok=True)


class WorkDir:
    def __init__(self, files, max_file_bytes):
        self.path = PATH
        self.max_file_bytes = max_file_bytes
        self._given = {}
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

    def leave(self):
        """Its contents go with the file system reset, which follows."""
        os.chdir(HOME)
