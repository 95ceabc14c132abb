"""The client: one supervisor process (started here, or attached to), JSON-RPC over its pipes.

Thread-safe: any number of threads (or asyncio tasks, through `execute_async`) may have
requests in flight at once; they are pipelined on the one connection, and a reader thread
hands each response to the request with its id.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import shlex
import shutil
import signal
import subprocess
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import IO, Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

from .errors import ConnectionClosedError, PoolError, rpc_error_from
from .results import ExecuteResult

OutputCallback = Callable[[str, str], None]
"""Called with (stream, text) as a streamed run writes: stream is "stdout" or "stderr"."""

DENO_FROM_NPM = ["npx", "--yes", "deno@2.9.6"]


def project_root() -> Path:
    """The pyodide-pool checkout: PYODIDE_POOL_ROOT, else the one this package lives in."""
    configured = os.environ.get("PYODIDE_POOL_ROOT")
    return Path(configured) if configured else Path(__file__).resolve().parents[3]


def deno_command(root: Path) -> List[str]:
    """How to run Deno: PYODIDE_POOL_DENO, `deno` on PATH, the project's npm-installed binary,
    or npx (which fetches Deno 2.9.6 from npm, as the README does). The npm package's own
    binary is preferred to its Node launcher, so that the process started is Deno itself."""
    configured = os.environ.get("PYODIDE_POOL_DENO")
    if configured:
        return [configured]
    on_path = shutil.which("deno")
    if on_path:
        return [on_path]
    for installed in (root / "node_modules" / "deno" / "deno", root / "node_modules" / ".bin" / "deno"):
        if installed.exists():
            return [str(installed)]
    return list(DENO_FROM_NPM)


def supervisor_command(args: Sequence[str] = (), root: Optional[Path] = None) -> List[str]:
    """The supervisor's command line: deno.json's `start` task (one source of truth for its
    permissions and flags), run directly rather than through `deno task`, so that the process
    this client holds is the supervisor itself. Run it with the project root as cwd."""
    root = root or project_root()
    task = json.loads((root / "deno.json").read_text())["tasks"]["start"]
    words = shlex.split(task)
    if words[0] != "deno":
        raise PoolError(f"unexpected start task in {root / 'deno.json'}: {task}")
    return deno_command(root) + words[1:] + list(args)


class Pool:
    """A pyodide-pool supervisor and a connection to it.

    >>> with Pool(["--pool-size", "2"]) as pool:          # doctest: +SKIP
    ...     print(pool.execute("6 * 7").result)
    42
    """

    def __init__(
        self,
        args: Sequence[str] = (),
        *,
        command: Optional[Sequence[str]] = None,
        env: Optional[Mapping[str, str]] = None,
        root: Optional[Union[str, Path]] = None,
        stderr: Optional[IO[bytes]] = None,
        wait_for_workers: Optional[int] = None,
        start_timeout: float = 120.0,
    ) -> None:
        """Starts a supervisor with `args` (supervisor flags, e.g. ["--pool-size", "2"]), or
        `command` (a whole command line). Its logs go to `stderr` (default: this process's).
        Waits until `wait_for_workers` workers are ready (default: none, since requests queue
        while workers start)."""
        project = Path(root) if root else project_root()
        argv = list(command) if command else supervisor_command(args, project)
        try:
            self._process: Optional[subprocess.Popen[bytes]] = subprocess.Popen(
                argv,
                cwd=str(project),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env={**os.environ, **(env or {})},
                # Its own process group: a launcher (npx) and the supervisor under it can be
                # killed together.
                start_new_session=True,
            )
        except OSError as error:
            raise ConnectionClosedError(f"could not start the supervisor ({argv[0]}): {error}")
        assert self._process.stdin is not None and self._process.stdout is not None
        self._connect(self._process.stdout, self._process.stdin)
        if wait_for_workers:
            self.wait_for_workers(wait_for_workers, start_timeout)

    @classmethod
    def attach(cls, reader: IO[bytes], writer: IO[bytes]) -> "Pool":
        """A connection to a supervisor started elsewhere: its stdout and its stdin."""
        pool = cls.__new__(cls)
        pool._process = None
        pool._connect(reader, writer)
        return pool

    def _connect(self, reader: IO[bytes], writer: IO[bytes]) -> None:
        self._reader_stream = reader
        self._writer = writer
        self._ids = itertools.count(1)
        self._pending: Dict[int, Future] = {}
        self._listeners: Dict[int, OutputCallback] = {}
        self._lock = threading.Lock()
        self._closed: Optional[ConnectionClosedError] = None
        self._reader = threading.Thread(target=self._read, name="pyodide-pool-reader", daemon=True)
        self._reader.start()

    # Calls

    def call_future(
        self, method: str, params: Any = None, on_output: Optional[OutputCallback] = None
    ) -> "Future[Any]":
        """Sends a request; the future resolves with its result or fails with an RpcError."""
        future: Future = Future()
        with self._lock:
            if self._closed:
                raise self._closed
            request_id = next(self._ids)
            self._pending[request_id] = future
            if on_output:
                self._listeners[request_id] = on_output
            message: Dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
            if params is not None:
                message["params"] = params
            try:
                self._writer.write((json.dumps(message) + "\n").encode())
                self._writer.flush()
            except (OSError, ValueError) as error:
                self._pending.pop(request_id, None)
                self._listeners.pop(request_id, None)
                raise ConnectionClosedError(f"the supervisor's input is closed: {error}")
        return future

    def call(self, method: str, params: Any = None, timeout: Optional[float] = None) -> Any:
        """Sends a request and waits for its result; raises an RpcError subclass on an error."""
        return self.call_future(method, params).result(timeout)

    def execute_future(self, code: str, **options: Any) -> "Future[ExecuteResult]":
        params, on_output = _execute_params(code, options)
        raw = self.call_future("execute", params, on_output)
        result: Future = Future()

        def convert(done: "Future[Any]") -> None:
            error = done.exception()
            if error is not None:
                result.set_exception(error)
            else:
                result.set_result(ExecuteResult.from_json(done.result()))

        raw.add_done_callback(convert)
        return result

    def execute(self, code: str, *, timeout: Optional[float] = None, **options: Any) -> ExecuteResult:
        """Runs `code`. Options are the `execute` params of docs/protocol.md: timeout_ms, stdin,
        session_id, session_bytes (bytes), return_session, files ({path: bytes}), packages,
        and on_output, a callback that receives the output as it is written. `timeout` (in
        seconds) bounds the wait here, not the run (use timeout_ms for that)."""
        return self.execute_future(code, **options).result(timeout)

    async def execute_async(self, code: str, **options: Any) -> ExecuteResult:
        """`execute` for asyncio: many may be awaited at once (asyncio.gather)."""
        return await asyncio.wrap_future(self.execute_future(code, **options))

    def health(self) -> Dict[str, Any]:
        return self.call("health")

    def stats(self) -> Dict[str, Any]:
        return self.call("stats")

    def packages(self) -> Dict[str, Any]:
        return self.call("packages")

    def shutdown(self) -> Dict[str, Any]:
        """Asks the pool to stop (it must run with --allow-shutdown)."""
        return self.call("shutdown")

    def wait_for_workers(self, count: int, timeout: float = 120.0) -> Dict[str, Any]:
        """Waits until `count` workers are ready; returns the last health report."""
        deadline = time.monotonic() + timeout
        while True:
            health = self.health()
            if health["ready_workers"] >= count:
                return health
            if time.monotonic() > deadline:
                raise PoolError(f"{count} workers not ready after {timeout} s: {health}")
            time.sleep(0.1)

    # Lifetime

    @property
    def pid(self) -> Optional[int]:
        return self._process.pid if self._process else None

    def close(self, timeout: float = 60.0) -> Optional[int]:
        """Closes the supervisor's input: it answers what it has received, then exits. Kills it
        if it has not exited after `timeout` seconds. Returns its exit code."""
        try:
            self._writer.close()
        except OSError:
            pass
        if self._process is None:
            self._reader.join(timeout)
            return None
        try:
            code = self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self._process.pid, signal.SIGKILL)
            code = self._process.wait()
        self._reader.join(5)
        self._reader_stream.close()
        return code

    def __enter__(self) -> "Pool":
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # The reader thread

    def _read(self) -> None:
        try:
            for line in self._reader_stream:
                if line.strip():
                    self._dispatch(json.loads(line))
        except (OSError, ValueError) as error:
            reason = f"the connection failed: {error}"
        else:
            reason = "the supervisor closed its output"
        code = self._process.wait() if self._process else None
        if code is not None:
            reason += f" (exit code {code})"
        with self._lock:
            self._closed = ConnectionClosedError(reason, code)
            pending = list(self._pending.values())
            self._pending.clear()
            self._listeners.clear()
        for future in pending:
            future.set_exception(self._closed)

    def _dispatch(self, value: Any) -> None:
        for message in value if isinstance(value, list) else [value]:
            if message.get("method") == "output":
                params = message.get("params") or {}
                listener = self._listeners.get(params.get("id"))
                if listener:
                    listener(params.get("stream", ""), params.get("text", ""))
                continue
            request_id = message.get("id")
            with self._lock:
                future = self._pending.pop(request_id, None)
                self._listeners.pop(request_id, None)
            if future is None:
                continue
            if "error" in message:
                future.set_exception(rpc_error_from(message["error"]))
            else:
                future.set_result(message.get("result"))


def _execute_params(code: str, options: Dict[str, Any]) -> "tuple[Dict[str, Any], Optional[OutputCallback]]":
    """The `execute` params for `code` and the options, bytes encoded as base64."""
    options = dict(options)
    on_output = options.pop("on_output", None)
    params: Dict[str, Any] = {"code": code}
    files = options.pop("files", None)
    if files is not None:
        params["files"] = [
            {"path": path, "content_b64": base64.b64encode(content).decode("ascii")}
            for path, content in files.items()
        ]
    state = options.pop("session_bytes", None)
    if state is not None:
        params["session_bytes"] = base64.b64encode(state).decode("ascii")
    # Everything else goes as given: the pool rejects unknown params with InvalidParamsError.
    params.update({key: value for key, value in options.items() if value is not None})
    if on_output is not None:
        params["stream"] = True
    return params, on_output
