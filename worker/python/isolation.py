"""Resets what one request may change for the next: modules it imported or patched,
builtins, os.environ, sys.path and the import machinery, interpreter-wide settings (the
recursion limit, trace and profile functions, monitoring tools, the SIGINT handler, ...), the
working directory, and files it left anywhere in the virtual file system.

The baseline is taken once, when the worker is ready; `restore` runs after every request and
costs a few dozen microseconds when the request changed nothing; `restore_files` runs only when
the worker's JavaScript side saw a watched file or folder change. What it does not cover is
documented in SECURITY.md (objects mutated in place inside modules, such as a class
attribute patched on a stdlib class).
"""

import builtins
import gc
import operator
import os
import shutil
import signal
import sys

# This module's functions look builtins (len, map, all, ...) up in a copy taken at import: a
# request may rebind them in `builtins` (`builtins.map = None`), and the reset must still run.
__builtins__ = dict(vars(builtins))

HOME = "/home/pyodide"
_KEPT_FILE_BYTES = 64 * 1024
# Device and process trees are Emscripten's own; everything else is user-writable.
_SKIPPED_TREES = ("/dev", "/proc")

# What the reset calls before it restores the modules, or outside the modules it restores (see
# `Baseline`), is held here as it was at import: a request may patch those functions in place
# (`operator.is_ = None`), and a reset that fails leaves an interpreter no request may use (the
# worker then replaces it).
_is = operator.is_
_SIGINT = signal.SIGINT
_getsignal = signal.getsignal
_setsignal = signal.signal
_gc_enable = gc.enable
_gc_disable = gc.disable
_set_asyncgen_hooks = sys.set_asyncgen_hooks


def _set_gc(enabled):
    (_gc_enable if enabled else _gc_disable)()


# Interpreter-wide settings that one call changes, as (read, write) pairs. A trace or profile
# function, asyncgen hooks or a monitoring tool would see every later request's frames; the
# others change how later requests run: a disabled collector keeps their garbage, and an ignored
# SIGINT (timeouts arrive as SIGINT) makes every later timeout cost an interpreter restart.
_SETTINGS = (
    (sys.getrecursionlimit, sys.setrecursionlimit),
    (sys.gettrace, sys.settrace),
    (sys.getprofile, sys.setprofile),
    (sys.get_asyncgen_hooks, lambda hooks: _set_asyncgen_hooks(*hooks)),
    (sys.get_coroutine_origin_tracking_depth, sys.set_coroutine_origin_tracking_depth),
    (sys.get_int_max_str_digits, sys.set_int_max_str_digits),
    (gc.isenabled, _set_gc),
    (lambda: _getsignal(_SIGINT), lambda handler: _setsignal(_SIGINT, handler)),
)
_MONITORING_TOOL_IDS = range(6)


def _settings():
    return [read() for read, _write in _SETTINGS]


_get_tool = sys.monitoring.get_tool
_clear_tool_id = sys.monitoring.clear_tool_id
_free_tool_id = sys.monitoring.free_tool_id
_use_tool_id = sys.monitoring.use_tool_id


def _monitoring_tools():
    return list(map(_get_tool, _MONITORING_TOOL_IDS))


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
            for name in dict.fromkeys(["builtins", *guarded_modules])
            if (module := sys.modules.get(name)) is not None
        ]
        self._environ = dict(os.environ)
        # The dict behind os.environ: comparing it is a C loop, comparing the mapping itself
        # runs Python code per variable (12 us against 0.5 us in Wasm).
        self._environ_data = os.environ._data
        self._environ_data_saved = dict(self._environ_data)
        self._path = list(sys.path)
        self._meta_path = list(sys.meta_path)
        self._path_hooks = list(sys.path_hooks)
        self._settings = _settings()
        self._monitoring_tools = _monitoring_tools()
        self._folders = {}
        self._files = {}
        self._take_files()

    def _take_files(self):
        for folder, files in _walk():
            self._folders[folder] = set(os.listdir(folder))
            for name in files:
                path = os.path.join(folder, name)
                if path in self._files:
                    continue
                # Small files are kept to be rewritten; a change to a large one (the stdlib
                # zip) cannot be undone here, and taints the worker.
                content = None
                if os.stat(path).st_size <= _KEPT_FILE_BYTES:
                    with open(path, "rb") as handle:
                        content = handle.read()
                self._files[path] = content

    def watched_paths(self):
        """The folders and files whose changes `restore_files` undoes. The worker's JavaScript
        side watches them (worker/fs_watch.ts): checking from Python cost 40 us a request."""
        return [*self._folders, *self._files]

    def restore(self):
        """Puts back everything but the files (see `restore_files`). The settings come first,
        so that the request's trace and monitoring functions stop as early as they can (one that
        raises makes the reset fail: the worker then replaces the interpreter); then module
        globals: the steps after them call `os` and `sys`, which the request may have patched.
        Restoring module globals drops the request's objects, whose destructors run then and
        may change settings again: the settings are checked once more at the end."""
        self._restore_settings()
        self._restore_modules()
        os.chdir(HOME)
        if os.environ._data is not self._environ_data or not _same(
            self._environ_data, self._environ_data_saved
        ):
            # Through the mapping, so that the C environment (putenv) follows.
            os.environ._data = self._environ_data
            os.environ.clear()
            os.environ.update(self._environ)
            self._environ_data_saved = dict(self._environ_data)
        sys.path[:] = self._path
        sys.meta_path[:] = self._meta_path
        sys.path_hooks[:] = self._path_hooks
        self._restore_settings()

    def _restore_modules(self):
        # The guarded globals first: they include `sys.modules` itself, should it be rebound.
        for current, saved in self._module_dicts:
            _restore_dict(current, saved)
        if not _same(sys.modules, self._modules):
            for name in list(sys.modules):
                if name not in self._modules:
                    del sys.modules[name]
            sys.modules.update(self._modules)

    def _restore_settings(self):
        current = _settings()
        if current != self._settings:
            for (_read, write), now, saved in zip(_SETTINGS, current, self._settings):
                if now != saved:
                    write(saved)
        tools = _monitoring_tools()
        if tools != self._monitoring_tools:
            for tool_id, now, saved in zip(_MONITORING_TOOL_IDS, tools, self._monitoring_tools):
                if now != saved:
                    # Clearing first drops the tool's events and callbacks with its id.
                    _clear_tool_id(tool_id)
                    _free_tool_id(tool_id)
                    if saved is not None:
                        _use_tool_id(tool_id, saved)

    def restore_files(self, changed):
        """Undoes the changes to `changed`, watched paths that were modified: entries added to
        a folder are removed, a small file is rewritten. False if that cannot be done: a large
        file changed, or a watched folder or file was removed or replaced (by a link, say).
        The worker is then tainted, and must be replaced."""
        clean = True
        for path in changed:
            if path in self._folders:
                if not _is_real(path, os.path.isdir):
                    clean = False
                    continue
                for name in self._folders[path]:
                    entry = os.path.join(path, name)
                    kind = os.path.isdir if entry in self._folders else os.path.isfile
                    if not _is_real(entry, kind):
                        clean = False
                for name in set(os.listdir(path)) - self._folders[path]:
                    entry = os.path.join(path, name)
                    if os.path.isdir(entry) and not os.path.islink(entry):
                        shutil.rmtree(entry, ignore_errors=True)
                    else:
                        os.remove(entry)
            elif self._files.get(path) is None:
                clean = False
            else:
                with open(path, "wb") as handle:
                    handle.write(self._files[path])
        return clean

    def allow_new_files(self):
        """Takes the files as they are now into the baseline (after a package installs)."""
        self._take_files()


def _is_real(path, kind):
    """True if `path` is what `kind` tests for (a folder, a file), and not a link to one."""
    return not os.path.islink(path) and kind(path)


def _same(current, saved):
    """True if no entry was added, removed or rebound. Length plus the identity of the
    values, in order, runs at C speed: comparing the keys as sets costs ten times more, and
    a rename changes the order of the values anyway."""
    return len(current) == len(saved) and all(map(_is, current.values(), saved.values()))


def _restore_dict(current, saved):
    """Puts a dict back as it was, if anything in it was added, removed or rebound."""
    if not _same(current, saved):
        current.clear()
        current.update(saved)
