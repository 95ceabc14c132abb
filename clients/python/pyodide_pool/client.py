"""The client: one supervisor process (started here, or attached to), JSON-RPC over its pipes.

Thread-safe: any number of threads (or asyncio tasks, through `execute_async`) may have
requests in flight at once. They are pipelined on the one connection, and a reader thread hands
each response to the request with its id.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import itertools
import json
import logging
import os
import reprlib
import shutil
import signal
import subprocess
import threading
import time
from concurrent.futures import Future, InvalidStateError
from pathlib import Path
from typing import (
    IO,
    Any,
    Callable,
    Deque,
    Dict,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
)

from .errors import ConnectionClosedError, PoolError, rpc_error_from
from .results import ExecuteResult

OutputCallback = Callable[[str, str], None]
"""Called with (stream, text) as a streamed run writes: stream is "stdout" or "stderr"."""

Files = Union[
    Mapping[Union[str, "os.PathLike[str]"], Union[bytes, str]],
    Sequence[Mapping[str, str]],
]
"""`execute`'s `files`: {path: content} (a str or os.PathLike path; bytes, or str written as
UTF-8), or the protocol's list of {"path": ..., "content_b64": ...}."""

DENO_FROM_NPM = ["npx", "--yes", "deno@2.9.6"]

_log = logging.getLogger("pyodide_pool")


def project_root() -> Path:
    """The pyodide-pool checkout: PYODIDE_POOL_ROOT, else the one this package lives in
    (clients/python/../..)."""
    configured = os.environ.get("PYODIDE_POOL_ROOT")
    return Path(configured) if configured else Path(__file__).resolve().parents[3]


def deno_command(root: Optional[Path] = None) -> List[str]:
    """How to run Deno: PYODIDE_POOL_DENO, else `deno` on the PATH, else the checkout's
    node_modules/.bin/deno, else `npx --yes deno@2.9.6`. For node_modules/.bin/deno, the npm
    package's binary next to its Node launcher is preferred, so that the process started (and
    killed) is Deno itself."""
    configured = os.environ.get("PYODIDE_POOL_DENO")
    if configured:
        return [configured]
    on_path = shutil.which("deno")
    if on_path:
        return [on_path]
    launcher = (root or project_root()) / "node_modules" / ".bin" / "deno"
    if launcher.exists():
        binary = launcher.resolve().with_name("deno")
        return [str(binary if os.access(binary, os.X_OK) else launcher)]
    return list(DENO_FROM_NPM)


def supervisor_command(args: Sequence[str] = (), root: Optional[Path] = None) -> List[str]:
    """The supervisor's command line: `deno task start` from deno.json, the one place that
    writes it (its permission set, its V8 flags), made to run from any directory, with `args`
    (supervisor flags) appended."""
    root = Path(root) if root is not None else project_root()
    config = root / "deno.json"
    try:
        task = json.loads(config.read_text())["tasks"]["start"]
    except (OSError, ValueError, KeyError) as error:
        raise PoolError(
            f"no pyodide-pool checkout at {root} ({config}: {error}): "
            "pass root= or set PYODIDE_POOL_ROOT"
        ) from None
    program, subcommand, *rest = task.split()
    if program != "deno" or subcommand != "run" or not rest or not rest[-1].endswith(".ts"):
        raise PoolError(f'{config}: tasks.start is not "deno run ... <script>.ts": {task}')
    *flags, script = rest
    return [*deno_command(root), "run", "--config", str(config), *flags, str(root / script), *args]


_Converter = Callable[[Any], Any]


class PoolClient:
    """A pyodide-pool supervisor and a connection to it.

    >>> with PoolClient(["--pool-size", "2"]) as pool:  # doctest: +SKIP
    ...     print(pool.execute("6 * 7").result)
    42
    """

    _process: Optional[subprocess.Popen[bytes]]

    def __init__(
        self,
        args: Sequence[str] = (),
        *,
        command: Optional[Sequence[str]] = None,
        env: Optional[Mapping[str, str]] = None,
        root: Optional[Union[str, Path]] = None,
        cwd: Optional[Union[str, Path]] = None,
        stderr: Union[None, int, IO[Any]] = None,
        wait_for_workers: int = 0,
        start_timeout: float = 120.0,
    ) -> None:
        """Starts a supervisor: `command` (default: `supervisor_command()` for `root`, else
        PYODIDE_POOL_ROOT, else this package's checkout) with `args` appended, such as
        ["--pool-size", "2"]. `env` is added to this process's environment. Its logs go to
        `stderr` (default: this process's; subprocess.DEVNULL drops them). With
        `wait_for_workers`, returns once that many workers are ready (else at once: requests
        queue while workers start), or raises PoolError after `start_timeout` seconds."""
        if isinstance(args, (str, bytes)):
            # A str is a sequence too: "--pool-size 2" would become one flag per character.
            raise _misuse("args", "a list of strings, such as ['--pool-size', '2']", args)
        project = Path(root) if root is not None else None
        base = list(command) if command is not None else supervisor_command(root=project)
        argv = [*base, *args]
        try:
            self._process = subprocess.Popen(
                argv,
                cwd=None if cwd is None else str(cwd),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env={**os.environ, **(env or {})},
                # Its own process group: a launcher (npx) and the supervisor under it can be
                # killed together, and a Ctrl-C meant for this program does not reach it (closing
                # its stdin stops it).
                start_new_session=True,
            )
        except OSError as error:
            raise ConnectionClosedError(
                f"cannot start the supervisor ({argv[0]}): {error}"
            ) from error
        assert self._process.stdin is not None and self._process.stdout is not None
        self._connect(self._process.stdout, self._process.stdin)
        if wait_for_workers > 0:
            try:
                self.wait_for_workers(wait_for_workers, start_timeout)
            except BaseException:
                self.close(timeout=5.0)
                raise

    @classmethod
    def attach(cls, reader: IO[bytes], writer: IO[bytes]) -> PoolClient:
        """A connection to a supervisor started elsewhere, through its stdout (`reader`) and its
        stdin (`writer`), both binary. `close()` closes `writer`."""
        pool = cls.__new__(cls)
        pool._process = None
        pool._connect(reader, writer)
        return pool

    def _connect(self, reader: IO[bytes], writer: IO[bytes]) -> None:
        self._input = reader
        self._output = writer
        self._ids = itertools.count(1)
        self._pending: Dict[int, Tuple[Future[Any], Optional[_Converter]]] = {}
        self._listeners: Dict[int, OutputCallback] = {}
        self._state_lock = threading.Lock()  # _pending, _listeners, _closed, _closing
        self._write_lock = threading.Lock()  # one line at a time on the supervisor's stdin
        self._queued_lines: Deque[bytes] = collections.deque()  # from callbacks, see _write
        self._lines_queued = threading.Event()
        self._writer: Optional[threading.Thread] = None
        self._closed: Optional[ConnectionClosedError] = None
        self._closing = False
        self._reader = threading.Thread(target=self._read, name="pyodide-pool-reader", daemon=True)
        self._reader.start()

    # Calls

    def call_future(self, method: str, params: Any = None) -> Future[Any]:
        """Sends a request; the future resolves with its result or fails with an RpcError."""
        return self._request(method, params)[0]

    def call(self, method: str, params: Any = None) -> Any:
        """Calls any method and waits for its result; raises the RpcError subclass for the
        code of an error response, or ConnectionClosedError."""
        return self._request(method, params)[0].result()

    def execute_future(
        self,
        code: str,
        *,
        timeout_ms: Optional[float] = None,
        stdin: Optional[str] = None,
        session_id: Optional[str] = None,
        tenant: Optional[str] = None,
        session_bytes: Optional[Union[str, bytes]] = None,
        return_session: Optional[bool] = None,
        files: Optional[Files] = None,
        packages: Optional[Sequence[str]] = None,
        stream: Optional[bool] = None,
        on_output: Optional[OutputCallback] = None,
    ) -> Future[ExecuteResult]:
        """`execute` as a concurrent.futures.Future. Cancelling the future (while it is
        pending) sends `$/cancelRequest`: a queued request never runs, a running one is
        interrupted. Arguments of the wrong type raise TypeError before anything is sent."""
        if not isinstance(code, str):
            raise _misuse("code", "a str of Python source", code)
        if isinstance(packages, (str, bytes)):
            raise _misuse("packages", "a list of names, such as ['numpy']", packages)
        if on_output is not None and not callable(on_output):
            raise _misuse("on_output", "a callable (stream, text)", on_output)
        params: Dict[str, Any] = {"code": code}
        if timeout_ms is not None:
            params["timeout_ms"] = timeout_ms
        if stdin is not None:
            params["stdin"] = stdin
        if session_id is not None:
            params["session_id"] = session_id
        if tenant is not None:
            params["tenant"] = tenant
        if session_bytes is not None:
            params["session_bytes"] = _encode_session(session_bytes)
        if return_session is not None:
            params["return_session"] = return_session
        if files is not None:
            params["files"] = _encode_files(files)
        if packages is not None:
            params["packages"] = list(packages)
        if on_output is not None:
            params["stream"] = True
        elif stream is not None:
            params["stream"] = stream
        future, request_id = self._request("execute", params, on_output, ExecuteResult.from_json)

        def cancel_if_cancelled(done: Future[Any]) -> None:
            if done.cancelled():
                self._forget(request_id)
                self._notify("$/cancelRequest", {"id": request_id})

        future.add_done_callback(cancel_if_cancelled)
        return future

    def execute(
        self,
        code: str,
        *,
        timeout_ms: Optional[float] = None,
        stdin: Optional[str] = None,
        session_id: Optional[str] = None,
        tenant: Optional[str] = None,
        session_bytes: Optional[Union[str, bytes]] = None,
        return_session: Optional[bool] = None,
        files: Optional[Files] = None,
        packages: Optional[Sequence[str]] = None,
        stream: Optional[bool] = None,
        on_output: Optional[OutputCallback] = None,
    ) -> ExecuteResult:
        """Runs Python `code`; the options are the `execute` params (docs/protocol.md), sent
        only when given. `on_output(stream, text)` is called (on the reader thread) with the
        output as the code writes it; it turns on `stream`. Python's own failures are results
        (`status`), not exceptions."""
        return self.execute_future(
            code,
            timeout_ms=timeout_ms,
            stdin=stdin,
            session_id=session_id,
            tenant=tenant,
            session_bytes=session_bytes,
            return_session=return_session,
            files=files,
            packages=packages,
            stream=stream,
            on_output=on_output,
        ).result()

    async def execute_async(
        self,
        code: str,
        *,
        timeout_ms: Optional[float] = None,
        stdin: Optional[str] = None,
        session_id: Optional[str] = None,
        tenant: Optional[str] = None,
        session_bytes: Optional[Union[str, bytes]] = None,
        return_session: Optional[bool] = None,
        files: Optional[Files] = None,
        packages: Optional[Sequence[str]] = None,
        stream: Optional[bool] = None,
        on_output: Optional[OutputCallback] = None,
    ) -> ExecuteResult:
        """`execute` for asyncio: any number may be in flight at once (asyncio.gather).
        Cancelling the task cancels the request."""
        return await asyncio.wrap_future(
            self.execute_future(
                code,
                timeout_ms=timeout_ms,
                stdin=stdin,
                session_id=session_id,
                tenant=tenant,
                session_bytes=session_bytes,
                return_session=return_session,
                files=files,
                packages=packages,
                stream=stream,
                on_output=on_output,
            )
        )

    def health(self) -> Dict[str, Any]:
        """Pool and per-worker state: status, ready_workers, pool_size, queue_depth, workers."""
        return self.call("health")  # type: ignore[no-any-return]

    def stats(self) -> Dict[str, Any]:
        """Counters, queue depth, latency percentiles and memory per worker."""
        return self.call("stats")  # type: ignore[no-any-return]

    def packages(self) -> Dict[str, Any]:
        """The packages that can be loaded, and those loaded pool-wide."""
        return self.call("packages")  # type: ignore[no-any-return]

    def shutdown(self) -> Dict[str, Any]:
        """Asks the pool to stop (needs --allow-shutdown); it answers what it has, then exits."""
        return self.call("shutdown")  # type: ignore[no-any-return]

    def wait_for_workers(self, count: int, timeout: float = 120.0) -> Dict[str, Any]:
        """Polls `health` until `count` workers are ready; returns the last report. Raises
        PoolError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            health = self.health()
            if health.get("ready_workers", 0) >= count:
                return health
            if time.monotonic() > deadline:
                raise PoolError(f"the pool did not get {count} ready workers: {health}")
            time.sleep(0.1)

    # Lifetime

    @property
    def pid(self) -> Optional[int]:
        """The supervisor's process id, when this client started it."""
        return self._process.pid if self._process else None

    def kill(self, sig: int = signal.SIGTERM) -> None:
        """Sends a signal to the supervisor (when this client started it)."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(sig)

    def close(self, timeout: float = 60.0) -> Optional[int]:
        """Closes the supervisor's stdin: it answers every request it has received, then exits.
        Past `timeout` seconds it is killed (with its process group). Returns its exit code
        (None when attached). Later calls raise ConnectionClosedError."""
        with self._state_lock:
            self._closing = True
        self._lines_queued.set()  # ends the writer thread
        with self._write_lock:
            try:
                self._flush_queued_lines()
            except ConnectionClosedError:
                pass
            try:
                self._output.close()
            except (OSError, ValueError):
                pass
        if self._process is None:
            self._reader.join(timeout)
            return None
        try:
            code = self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            _kill_group(self._process)
            code = self._process.wait()
        self._reader.join(5.0)
        if not self._reader.is_alive():
            self._input.close()
        return code

    def __enter__(self) -> PoolClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # The connection

    def _request(
        self,
        method: str,
        params: Any = None,
        on_output: Optional[OutputCallback] = None,
        convert: Optional[_Converter] = None,
    ) -> Tuple[Future[Any], int]:
        """Sends a request: its future and its id."""
        future: Future[Any] = Future()
        with self._state_lock:
            if self._closed is not None:
                raise ConnectionClosedError(str(self._closed), self._closed.exit_code)
            if self._closing:
                raise ConnectionClosedError("the pool is closed")
            request_id = next(self._ids)
            message: Dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
            if params is not None:
                message["params"] = params
            # Before registering: a value JSON cannot carry fails here, and nothing is pending.
            line = (json.dumps(message, allow_nan=False) + "\n").encode()
            self._pending[request_id] = (future, convert)
            if on_output is not None:
                self._listeners[request_id] = on_output
        try:
            self._write(line)
        except ConnectionClosedError as error:
            self._forget(request_id)
            # The supervisor is gone: say how it ended (the reader finds out within a second).
            if self._process is not None and threading.current_thread() is not self._reader:
                self._reader.join(2.0)
            closed = self._closed
            if closed is not None:
                raise ConnectionClosedError(str(closed), closed.exit_code) from error
            raise
        return future, request_id

    def _forget(self, request_id: int) -> Optional[Tuple[Future[Any], Optional[_Converter]]]:
        """Stops waiting for a request's answer and output; its pending entry, if any."""
        with self._state_lock:
            self._listeners.pop(request_id, None)
            return self._pending.pop(request_id, None)

    def _notify(self, method: str, params: Any) -> None:
        """Sends a notification; a closed connection is ignored (nothing is pending then)."""
        line = (json.dumps({"jsonrpc": "2.0", "method": method, "params": params}) + "\n").encode()
        try:
            self._write(line)
        except ConnectionClosedError:
            pass

    def _write(self, line: bytes) -> None:
        if threading.current_thread() is self._reader:
            # A callback (a cancel, a new request) writes from the reader thread, which must
            # never wait for the pipe: the supervisor reads no requests while its answers go
            # unread, so a reader blocked behind a full pipe would stall both sides. Its lines
            # queue, in order, for the writer thread.
            self._queued_lines.append(line)
            if self._writer is None:
                self._writer = threading.Thread(
                    target=self._write_queued_lines, name="pyodide-pool-writer", daemon=True
                )
                self._writer.start()
            self._lines_queued.set()
            return
        with self._write_lock:
            # Lines a callback queued were written before this one.
            self._flush_queued_lines()
            self._write_line(line)

    def _write_line(self, line: bytes) -> None:
        try:
            self._output.write(line)
            self._output.flush()
        except (OSError, ValueError) as error:
            raise ConnectionClosedError(f"the supervisor's stdin is closed: {error}") from error

    def _flush_queued_lines(self) -> None:
        """Writes the lines callbacks queued; the caller holds the write lock."""
        while self._queued_lines:
            self._write_line(self._queued_lines.popleft())

    def _write_queued_lines(self) -> None:
        """The writer thread: the lines callbacks queued on the reader thread."""
        while not self._closing:
            self._lines_queued.wait()
            self._lines_queued.clear()
            with self._write_lock:
                try:
                    self._flush_queued_lines()
                except ConnectionClosedError:
                    # The reader fails whatever is pending once the supervisor's stdout ends.
                    self._queued_lines.clear()

    def _read(self) -> None:
        """The reader thread: every line of the supervisor's stdout, until it ends."""
        reason: Optional[str] = None
        try:
            for line in self._input:
                if reason is not None or not line.strip():
                    continue  # after a broken line: drain, so that the supervisor never blocks
                try:
                    value = json.loads(line)
                except ValueError as error:
                    # A broken line leaves no way to tell whose answer it was: nothing pending
                    # can be trusted any more.
                    reason = f"unreadable output from the supervisor: {error}"
                    self._fail(ConnectionClosedError(reason))
                    continue
                try:
                    self._dispatch(value)
                except Exception:  # noqa: BLE001 - the reader must outlive any one message
                    _log.exception("pyodide_pool: cannot handle a message from the supervisor")
        except (OSError, ValueError):
            pass  # the stream broke (the process went away): the same as its end
        self._fail(self._exit_reason())

    def _exit_reason(self) -> ConnectionClosedError:
        if self._process is None:
            return ConnectionClosedError("the supervisor closed its stdout")
        try:
            # stdout can end a moment before the exit.
            code = self._process.wait(1.0)
        except subprocess.TimeoutExpired:
            return ConnectionClosedError("the supervisor closed its stdout")
        how = f"signal {-code}" if code < 0 else f"code {code}"
        return ConnectionClosedError(f"the supervisor exited ({how})", code)

    def _fail(self, error: ConnectionClosedError) -> None:
        """Fails every pending request with `error`, and every later one at once."""
        with self._state_lock:
            if self._closed is None:
                self._closed = error
            pending = list(self._pending.values())
            self._pending.clear()
            self._listeners.clear()
        for future, _ in pending:
            _settle(future, exception=ConnectionClosedError(str(error), error.exit_code))

    def _dispatch(self, value: Any) -> None:
        for message in value if isinstance(value, list) else [value]:
            if not isinstance(message, dict):
                continue
            if "method" in message and "id" not in message:
                self._notification(str(message["method"]), message.get("params"))
                continue
            request_id = message.get("id")
            if not isinstance(request_id, int):
                continue
            entry = self._forget(request_id)
            if entry is None:
                continue  # cancelled, or not ours
            future, convert = entry
            error = message.get("error")
            if error is not None:
                _settle(future, exception=rpc_error_from(error if isinstance(error, dict) else {}))
                continue
            try:
                result = message.get("result")
                _settle(future, result=convert(result) if convert else result)
            except Exception as failure:  # noqa: BLE001 - a malformed result fails its call only
                _settle(future, exception=PoolError(f"unexpected result: {failure!r}"))

    def _notification(self, method: str, params: Any) -> None:
        if method != "output" or not isinstance(params, dict):
            return
        request_id = params.get("id")
        listener = self._listeners.get(request_id) if isinstance(request_id, int) else None
        if listener is None:
            return
        try:
            listener(str(params.get("stream", "")), str(params.get("text", "")))
        except Exception:  # noqa: BLE001 - a failing callback must not stop the reader
            _log.exception("pyodide_pool: the on_output callback raised")


def _settle(
    future: Future[Any], result: Any = None, exception: Optional[BaseException] = None
) -> None:
    """Resolves `future` unless it is already done (cancelled by its caller)."""
    try:
        if exception is not None:
            future.set_exception(exception)
        else:
            future.set_result(result)
    except InvalidStateError:
        pass


def _misuse(name: str, expected: str, value: Any) -> TypeError:
    """The TypeError for an argument of the wrong type, naming it (raised before sending)."""
    return TypeError(f"{name} must be {expected}: {reprlib.repr(value)}")


def _encode_session(state: Union[str, bytes]) -> str:
    """Client-held state as the protocol's base64: as returned (str), or decoded (bytes)."""
    if isinstance(state, str):
        return state
    if isinstance(state, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(state)).decode("ascii")
    raise _misuse("session_bytes", "the base64 str a return_session run gave, or bytes", state)


def _encode_files(files: Files) -> List[Dict[str, str]]:
    """`files` as the protocol's list; TypeError for anything else."""
    if isinstance(files, Mapping):
        encoded = []
        for path, content in files.items():
            if isinstance(path, os.PathLike):
                path = os.fspath(path)
            if not isinstance(path, str):
                raise _misuse("each path in files", "a str", path)
            if isinstance(content, str):
                data = content.encode()
            elif isinstance(content, (bytes, bytearray, memoryview)):
                data = bytes(content)
            else:
                raise _misuse(f"files[{path!r}]", "bytes or str", content)
            encoded.append({"path": path, "content_b64": base64.b64encode(data).decode("ascii")})
        return encoded
    if not isinstance(files, Sequence) or isinstance(files, (str, bytes, bytearray, memoryview)):
        raise _misuse(
            "files",
            'a dict of path -> bytes or str, or a list of {"path", "content_b64"} dicts',
            files,
        )
    for index, file in enumerate(files):
        if not (
            isinstance(file, Mapping)
            and isinstance(file.get("path"), str)
            and isinstance(file.get("content_b64"), str)
        ):
            raise _misuse(f"files[{index}]", 'a dict {"path": str, "content_b64": str}', file)
    return [dict(file) for file in files]


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL for the supervisor and everything it started (its own process group)."""
    try:
        if hasattr(os, "killpg"):
            os.killpg(process.pid, signal.SIGKILL)
        else:
            process.kill()
    except OSError:
        pass
