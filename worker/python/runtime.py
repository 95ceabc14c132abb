"""The Python side of a worker: runs one request's code in a fresh namespace.

Loaded once when the interpreter starts. `run` is called from JavaScript for every request;
it returns the outcome as a JSON string (one cheap crossing instead of a proxy per field), or,
for code that uses top-level await, a coroutine that returns that string.

What `run` reads and reports, and the functions the JavaScript side calls, are typed in
worker/runtime_contract.ts (`RuntimeRequest`, `RuntimeReport`, `Runtime`): keep them in step.
"""

import ast
import asyncio
import errno
import functools
import inspect
import io
import json
import linecache
import os
import posix
import sys
import time
import traceback

from pyodide.code import CodeRunner

import pyodide_pool_figures as figures
import pyodide_pool_isolation as isolation
import pyodide_pool_loop_guard as loop_guard
import pyodide_pool_state as state
import pyodide_pool_workdir as workdir

# The name user code runs under; tracebacks show its lines through linecache.
CODE_FILENAME = "<code>"

_max_repr_chars = 1 << 20
_close_run = None
_interrupts_in_callbacks = None
_MAX_TRACEBACK_FRAMES = 100

# Compiling through CodeRunner (parse, rewrite the last expression, compile) costs about
# 75 us, several times the run of a small snippet. Compiled runners hold no state of a run,
# so repeated sources (harnesses, health checks, graders) reuse them.
_CACHED_SOURCE_MAX_CHARS = 4096


def _compile(code):
    return CodeRunner(code, filename=CODE_FILENAME, flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT).compile()


_compile_cached = functools.lru_cache(maxsize=256)(_compile)


def install(wait_ms, close_run, interrupts_in_callbacks, max_repr_chars, reseed):
    """Called once per interpreter start: patches time.sleep so that the timeout interrupt can
    stop it, and, if `reseed`, reseeds `random` (a restored snapshot carries the state it was
    taken with).

    `wait_ms` is a JavaScript function that blocks on the interrupt buffer (Atomics.wait) for
    at most the given milliseconds and raises KeyboardInterrupt if it was signalled;
    `close_run` ends the part of a run that interrupts can cut; within an async run,
    `interrupts_in_callbacks(delta)` lets Python take them only inside event-loop callbacks
    (see loop_guard).
    """
    global _max_repr_chars, _close_run, _interrupts_in_callbacks
    _max_repr_chars = max_repr_chars
    _close_run = close_run
    _interrupts_in_callbacks = interrupts_in_callbacks
    # Every worker restored from one memory snapshot would share its random state (with the
    # memory image, each run that starts from it reseeds instead: `reseed` is false).
    if reseed:
        _reseed()

    def sleep(seconds):
        seconds = float(seconds)
        if seconds < 0:
            raise ValueError("sleep length must be non-negative")
        wait_ms(seconds * 1000.0)

    sleep.__doc__ = time.sleep.__doc__
    time.sleep = sleep
    os.system = posix.system = _no_processes
    loop_guard.install(cancel_current, interrupts_in_callbacks)


def _reseed():
    """Seeds `random` afresh: a worker restored from the snapshot, and every request that
    starts from a memory image put back, would otherwise draw the same numbers."""
    if "random" in sys.modules:
        sys.modules["random"].seed()


def _user_traceback(exc):
    """Formats `exc` from the first frame of user code on, without this runtime's frames
    or the JavaScript frames that a patched function (time.sleep) passes through."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != CODE_FILENAME:
        tb = tb.tb_next
    if tb is None and not isinstance(exc, SyntaxError):
        tb = exc.__traceback__
    # The frames nearest the error matter most; a deep recursion has thousands.
    report = traceback.TracebackException(type(exc), exc, tb, limit=-_MAX_TRACEBACK_FRAMES)
    report.stack = traceback.StackSummary.from_list(
        [frame for frame in report.stack if not _is_internal(frame.filename)]
    )
    return "".join(report.format())


def _is_internal(filename):
    return filename == __file__ or filename.startswith("file://")


def _error(exc):
    """Describes `exc`; if describing it fails too (an interrupt arrives while the traceback
    is formatted, or memory runs out), a description without traceback still comes back."""
    try:
        return {
            "type": type(exc).__name__,
            "message": _capped(str(exc)),
            "traceback": _capped(_user_traceback(exc)),
        }
    except BaseException:  # noqa: BLE001 - the runtime must always answer
        return {"type": type(exc).__name__, "message": "", "traceback": ""}


def _repr(value):
    return None if value is None else _capped(repr(value))


def _capped(text):
    """A result's text (repr, an error's message or traceback), cut at the cap: each becomes
    part of one line to the supervisor, which holds it, and to the client."""
    if len(text) > _max_repr_chars:
        return text[:_max_repr_chars] + "...[truncated]"
    return text


class _Run:
    """One request: its namespace and the parts of its result."""

    def __init__(self, request):
        self.request = request
        session_id = request.get("session_id")
        if session_id is not None:
            self.namespace = state.session_namespace(session_id)
        elif request.get("session_bytes") is not None:
            self.namespace = state.load(request["session_bytes"])
        else:
            self.namespace = state.fresh_namespace()
        workdir.enter()

    def finish(self, status, value=None, exc=None):
        """The outcome as JSON: `value` or, if `exc` is given, the error it describes. The
        reset (`reset`) follows once the answer is on its way: it always runs before the next
        request, but off this request's path."""
        # From here on no interrupt reaches Python: reporting and reset must end. That includes
        # describing the error, which is the runtime's work, not the request's.
        _close_run()
        exit_code = None
        if isinstance(exc, SystemExit):
            status, exit_code, exc = "exited", _exit_code(exc), None
        sys.stdout.flush()
        sys.stderr.flush()
        error = None if exc is None else _error(exc)
        try:
            outcome = {
                "status": status,
                "result": _repr(value) if error is None else None,
                "error": error,
                "figures": figures.capture(),
            }
            if exit_code is not None:
                outcome["exit_code"] = exit_code
            if self.request.get("return_session"):
                outcome["session_bytes"], outcome["session_dropped"] = state.dump(self.namespace)
        except BaseException as failure:  # noqa: BLE001 - the runtime must always answer
            outcome = {"status": "error", "result": None, "error": _error(failure)}
        return json.dumps(outcome)


def _exit_code(exc):
    """The status `sys.exit(code)` gives a process in CPython: None is 0, an int is itself,
    anything else is written to stderr and is 1."""
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        # As a process reports it: the low 8 bits (a bool is an int too) of a C long, and
        # CPython's -1 for an int that does not fit one.
        code = int(exc.code)
        return code & 0xFF if -(2**63) <= code < 2**63 else 255
    try:
        print(exc.code, file=sys.stderr)
    except BaseException:  # noqa: BLE001 - the runtime must always answer
        pass
    return 1


def _no_processes(*args, **kwargs):
    """`os.system` and `posix.system`: no process can be spawned here (the same error as
    `subprocess` and `os.popen`; the C `system` fails with ENOSYS below Python)."""
    raise OSError(errno.ENOTSUP, "emscripten does not support processes.")


def reset():
    """Undoes what the last request changed in the interpreter (isolation.py); its files are
    checked from JavaScript. Called after every request, before the next one runs."""
    loop_guard.end_request()
    baseline = _live["baseline"]
    if baseline is not None:
        baseline.restore()


# The stdlib modules the runtime reports results through: a request that patched one of them
# could change how the next request is reported, so their globals are restored every time.
_RUNTIME_STDLIB = (
    "base64", "io", "json", "json.encoder", "linecache", "os", "pickle", "shutil",
    "sys", "traceback",
)

# Mutable state lives in this dict, never in rebound globals: the isolation reset puts every
# module's globals back as they were when the worker was sealed.
_live = {"task": None, "baseline": None}


def seal():
    """Takes the isolation baseline: called once, when the worker is ready for requests."""
    workdir.prepare()
    own = [name for name in sys.modules if name.startswith("pyodide_pool_")]
    _live["baseline"] = isolation.Baseline(own + list(_RUNTIME_STDLIB))


def accept_installed():
    """Packages just installed are part of the baseline, not traces of a request."""
    if _live["baseline"] is not None:
        _live["baseline"].allow_new_files()


def watched_paths():
    """The folders and files the JavaScript side watches for changes, as JSON."""
    return json.dumps(_live["baseline"].watched_paths())


def restore_files(changed_json):
    """Undoes changes to the watched paths given (JSON); False if one cannot be undone."""
    return _live["baseline"].restore_files(json.loads(changed_json))


def cancel_current():
    """Cancels a run awaiting in top-level `await`: an interrupt cannot reach Python there,
    since no Python code runs while the event loop waits."""
    task = _live["task"]
    if task is not None and not task.done():
        task.cancel()


async def _run_async(run, runner):
    try:
        value = await runner.run_async(run.namespace)
    except BaseException as exc:  # noqa: BLE001 - every outcome of user code is a result
        return run.finish("error", exc=exc)
    return run.finish("ok", value)


def run(request_json, reseed=False):
    """Runs one request (JSON: code, stdin, session_id, session_bytes, return_session);
    returns the outcome as JSON, or an asyncio task that returns it. `reseed`: the request
    starts from a memory image just put back, whose `random` state every such request shares."""
    if reseed:
        _reseed()
    request = json.loads(request_json)
    code = request["code"]
    sys.stdin = io.StringIO(request.get("stdin") or "")
    try:
        current = _Run(request)
    except BaseException as exc:  # noqa: BLE001 - bad session state is a result too
        _close_run()
        return json.dumps({"status": "error", "result": None, "error": _error(exc)})
    lines = code.splitlines(keepends=True)
    linecache.cache[CODE_FILENAME] = (len(code), None, lines, CODE_FILENAME)
    try:
        if len(code) <= _CACHED_SOURCE_MAX_CHARS:
            runner = _compile_cached(code)
        else:
            runner = _compile(code)
        if runner.code is not None and runner.code.co_flags & inspect.CO_COROUTINE:
            # The code runs in event-loop callbacks, which take interrupts (loop_guard); the
            # loop's own steps between them must not.
            _interrupts_in_callbacks(0)
            _live["task"] = asyncio.ensure_future(_run_async(current, runner))
            return _live["task"]
        value = runner.run(current.namespace)
    except BaseException as exc:  # noqa: BLE001 - every outcome of user code is a result
        return current.finish("error", exc=exc)
    return current.finish("ok", value)


def drop_session(session_id):
    return state.drop_session(session_id)


def export_sessions():
    return json.dumps(state.export_sessions())


def import_sessions(exported_json):
    return json.dumps(state.import_sessions(json.loads(exported_json)))
