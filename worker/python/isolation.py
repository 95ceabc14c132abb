"""Resets what one request may change for the next: modules it imported or patched,
builtins, os.environ, sys.path and the import machinery, the recursion limit, the working
directory, and files it left anywhere in the virtual file system.

The baseline is taken once, when the worker is ready; `restore` runs after every request and
costs a few dozen microseconds when the request changed nothing. What it does not cover is
documented in SECURITY.md (objects mutated in place inside modules, such as a class
attribute patched on a stdlib class).
"""

import builtins
import operator
import os
import shutil
import sys

HOME = "/home/pyodide"
_KEPT_FILE_BYTES = 64 * 1024
# Device and process trees are Emscripten's own; everything else is user-writable.
_SKIPPED_TREES = ("/dev", "/proc")


def _walk():
    for folder, _dirs, files in os.walk("/"):
        if folder.startswith(_SKIPPED_TREES):
            continue
        yield folder, files


class Baseline:
    def __init__(self, guarded_modules):
        """`guarded_modules`: the modules whose globals are put back after every request, the
        runtime's own and the stdlib modules it calls, so that no request can change how the
        next one is run or reported. Checking every module's globals would cost about 1 ms
        a request; other modules' globals are not restored (see SECURITY.md)."""
        self._modules = dict(sys.modules)
        self._module_dicts = [
            (module.__dict__, dict(module.__dict__))
            for name in guarded_modules
            if (module := sys.modules.get(name)) is not None
        ]
        self._builtins = dict(builtins.__dict__)
        self._environ = dict(os.environ)
        self._path = list(sys.path)
        self._meta_path = list(sys.meta_path)
        self._path_hooks = list(sys.path_hooks)
        self._recursion_limit = sys.getrecursionlimit()
        self._folders = {}
        self._files = {}
        for folder, files in _walk():
            self._folders[folder] = [os.stat(folder).st_mtime, set(os.listdir(folder))]
            for name in files:
                path = os.path.join(folder, name)
                stat = os.stat(path)
                # Small files are kept to be rewritten; a change to a large one (the stdlib
                # zip) cannot be undone here, and taints the worker.
                content = None
                if stat.st_size <= _KEPT_FILE_BYTES:
                    with open(path, "rb") as handle:
                        content = handle.read()
                self._files[path] = [stat.st_mtime, content]

    def restore(self):
        """Puts everything back; False if a file could not be restored (the worker is then
        tainted, and must be replaced)."""
        os.chdir(HOME)
        sys.setrecursionlimit(self._recursion_limit)
        self._restore_modules()
        _restore_dict(builtins.__dict__, self._builtins)
        if os.environ != self._environ:
            os.environ.clear()
            os.environ.update(self._environ)
        sys.path[:] = self._path
        sys.meta_path[:] = self._meta_path
        sys.path_hooks[:] = self._path_hooks
        return self._restore_files()

    def _restore_modules(self):
        if not _same(sys.modules, self._modules):
            for name in list(sys.modules):
                if name not in self._modules:
                    del sys.modules[name]
            sys.modules.update(self._modules)
        for current, saved in self._module_dicts:
            _restore_dict(current, saved)

    def _restore_files(self):
        for folder, state in self._folders.items():
            try:
                mtime = os.stat(folder).st_mtime
            except OSError:
                os.makedirs(folder, exist_ok=True)
                mtime = None
            if mtime == state[0]:
                continue
            for name in set(os.listdir(folder)) - state[1]:
                path = os.path.join(folder, name)
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    os.remove(path)
            state[0] = os.stat(folder).st_mtime
        clean = True
        for path, state in self._files.items():
            try:
                if os.stat(path).st_mtime == state[0]:
                    continue
            except OSError:
                pass
            if state[1] is None:
                clean = False
                continue
            with open(path, "wb") as handle:
                handle.write(state[1])
            state[0] = os.stat(path).st_mtime
        return clean

    def allow_new_files(self):
        """Takes the files as they are now into the baseline (after a package installs)."""
        for folder, files in _walk():
            self._folders[folder] = [os.stat(folder).st_mtime, set(os.listdir(folder))]


def _same(current, saved):
    """True if no entry was added, removed or rebound. Length plus the identity of the
    values, in order, runs at C speed: comparing the keys as sets costs ten times more, and
    a rename changes the order of the values anyway."""
    return len(current) == len(saved) and all(map(operator.is_, current.values(), saved.values()))


def _restore_dict(current, saved):
    """Puts a dict back as it was, if anything in it was added, removed or rebound."""
    if not _same(current, saved):
        current.clear()
        current.update(saved)
