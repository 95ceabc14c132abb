"""The Python client against a real supervisor (run by tests/python_client_test.ts in CI).

    PYTHONPATH=clients/python python3 -m unittest discover -s clients/python/tests -t clients/python
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import signal
import base64
import subprocess
import sys
import time
import unittest
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Dict, List, Tuple

from pyodide_pool import (
    ConnectionClosedError,
    ErrorCode,
    ExecuteResult,
    InvalidParamsError,
    MethodNotFoundError,
    PoolClient,
    RpcError,
    SessionNotFoundError,
    supervisor_command,
)

QUIET = ["--log-level", "warning"]

# execute() arguments of the wrong type, and the start of the TypeError each must raise.
MISUSES: List[Tuple[str, Dict[str, Any]]] = [
    ("code must be a str", {"code": b"1"}),
    # A str is a sequence of characters: it would ask for packages "n", "u", "m", ...
    ("packages must be a list", {"packages": "numpy"}),
    ("on_output must be a callable", {"on_output": 3}),
    ("files must be a dict of path -> bytes or str, or a list", {"files": "in.txt"}),
    (r"files\[0\] must be a dict \{", {"files": [b"x"]}),
    (r"files\[0\] must be a dict \{", {"files": [{"path": "a", "content_b64": 3}]}),
    # bytes(3) would be three zero bytes.
    (r"files\['a'\] must be bytes or str: 3", {"files": {"a": 3}}),
    ("each path in files must be a str", {"files": {b"a": b"x"}}),
    ("session_bytes must be the base64 str", {"session_bytes": 3}),
]


class SharedPoolTest(unittest.TestCase):
    """Tests that can share one warm pool of two workers."""

    pool: PoolClient

    @classmethod
    def setUpClass(cls) -> None:
        cls.pool = PoolClient(["--pool-size", "2", *QUIET], wait_for_workers=2)

    @classmethod
    def tearDownClass(cls) -> None:
        code = cls.pool.close()
        assert code == 0, f"the supervisor exited with {code}"

    def test_execute_returns_a_typed_result(self) -> None:
        result = self.pool.execute("print('hello')\n6 * 7")
        self.assertIsInstance(result, ExecuteResult)
        self.assertTrue(result.ok)
        self.assertEqual(result.result, "42")
        self.assertEqual(result.stdout, "hello\n")
        self.assertIn(result.worker_id, ("w1", "w2"))

    def test_python_exceptions_are_results(self) -> None:
        result = self.pool.execute("1 / 0")
        self.assertEqual(result.status, "error")
        assert result.error is not None
        self.assertEqual(result.error.type, "ZeroDivisionError")
        self.assertIn("1 / 0", result.error.traceback)

    def test_timeouts_are_results(self) -> None:
        result = self.pool.execute("while True: pass", timeout_ms=100)
        self.assertEqual(result.status, "timeout")
        self.assertEqual(self.pool.execute("1 + 1").result, "2")

    def test_json_rpc_errors_raise_by_code(self) -> None:
        with self.assertRaises(InvalidParamsError) as raised:
            self.pool.execute("1", timeout_ms=-5)
        self.assertEqual(raised.exception.code, -32602)
        self.assertEqual(raised.exception.code, ErrorCode.InvalidParams)
        self.assertEqual(raised.exception.data["field"], "timeout_ms")
        with self.assertRaises(InvalidParamsError) as raised:
            self.pool.call("execute", {"code": "1", "timeuot_ms": 10})
        self.assertEqual(raised.exception.data["field"], "timeuot_ms")
        with self.assertRaises(MethodNotFoundError):
            self.pool.call("nope")
        with self.assertRaises(RpcError):
            self.pool.execute("1", session_id="")

    def test_misused_options_raise_type_error(self) -> None:
        for message, misuse in MISUSES:
            with self.subTest(misuse=misuse), self.assertRaisesRegex(TypeError, f"^{message}"):
                self.pool.execute(**{"code": "1", **misuse})
        with self.assertRaisesRegex(TypeError, "^args must be a list"):
            PoolClient("--pool-size 1")
        # The right types still pass, files in both forms.
        self.assertEqual(self.pool.execute("1", packages=()).result, "1")
        read = "open('a').read() + open('b').read()"
        as_dict = {"a": "x", pathlib.PurePosixPath("b"): bytearray(b"y")}
        self.assertEqual(self.pool.execute(read, files=as_dict).result, "'xy'")
        listed = [{"path": "a", "content_b64": "eA=="}, {"path": "b", "content_b64": "eQ=="}]
        self.assertEqual(self.pool.execute(read, files=listed).result, "'xy'")

    def test_files_in_and_out_as_bytes(self) -> None:
        result = self.pool.execute(
            "open('out.bin', 'wb').write(open('in.bin', 'rb').read()[::-1])",
            files={"in.bin": bytes(range(256))},
        )
        self.assertEqual([f.path for f in result.files], ["out.bin"])
        self.assertEqual(result.files[0].size, 256)
        self.assertEqual(result.files[0].content, bytes(range(256))[::-1])
        expected = base64.b64encode(bytes(range(256))[::-1]).decode()
        self.assertEqual(result.files[0].content_b64, expected)

    def test_sessions_server_held_and_client_held(self) -> None:
        self.pool.execute("n = 1", session_id="py-client", tenant="alice")
        self.assertEqual(
            self.pool.execute("n += 1\nn", session_id="py-client", tenant="alice").result, "2"
        )
        # A session belongs to the tenant that created it.
        with self.assertRaises(InvalidParamsError):
            self.pool.execute("n", session_id="py-client", tenant="bob")
        state = self.pool.execute("total = 10", return_session=True).session_bytes
        self.assertIsInstance(state, str)  # base64, as on the wire
        assert state is not None
        self.assertEqual(self.pool.execute("total * 2", session_bytes=state).result, "20")
        # The decoded state is accepted too.
        decoded = base64.b64decode(state)
        self.assertEqual(self.pool.execute("total * 3", session_bytes=decoded).result, "30")

    def test_on_output_streams_before_the_result(self) -> None:
        chunks = []
        result = self.pool.execute(
            "import time\nprint('a', flush=True)\ntime.sleep(0.05)\nprint('b')",
            on_output=lambda stream, text: chunks.append((stream, text)),
        )
        self.assertEqual("".join(text for _, text in chunks), "a\nb\n")
        self.assertEqual({stream for stream, _ in chunks}, {"stdout"})
        self.assertEqual(result.stdout, "a\nb\n")

    def test_a_failing_on_output_callback_does_not_stop_the_client(self) -> None:
        def fail(_stream: str, _text: str) -> None:
            raise RuntimeError("callback bug")

        with self.assertLogs("pyodide_pool", "ERROR"):
            self.assertEqual(self.pool.execute("print(1)\n2", on_output=fail).result, "2")
        self.assertEqual(self.pool.execute("3").result, "3")

    def test_threads_share_the_pool(self) -> None:
        with ThreadPoolExecutor(max_workers=20) as executor:
            results = list(executor.map(lambda i: self.pool.execute(f"{i} * {i}"), range(20)))
        self.assertEqual([r.result for r in results], [str(i * i) for i in range(20)])
        self.assertEqual({r.worker_id for r in results}, {"w1", "w2"})

    def test_asyncio_gathers_many_requests(self) -> None:
        async def main() -> list[ExecuteResult]:
            return await asyncio.gather(
                *(self.pool.execute_async(f"{i} + 1") for i in range(10))
            )

        results = asyncio.run(main())
        self.assertEqual([r.result for r in results], [str(i + 1) for i in range(10)])

    def test_cancelling_a_task_cancels_the_request(self) -> None:
        async def main() -> None:
            task = asyncio.ensure_future(self.pool.execute_async("import time\ntime.sleep(20)"))
            await asyncio.sleep(0.2)
            task.cancel()
            with self.assertRaises(asyncio.CancelledError):
                await task

        def cancelled() -> int:
            return int(self.pool.stats()["requests"].get("cancelled", 0))

        before = cancelled()
        asyncio.run(main())
        # The running request was interrupted and answered -32003: the pool counts it as
        # cancelled (an uncancelled one would sleep on for 20 s and count as ok).
        deadline = time.monotonic() + 10
        while cancelled() == before and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(cancelled(), before + 1)
        results = [self.pool.execute_future(f"{i}") for i in range(4)]
        self.assertEqual([r.result(timeout=10).result for r in results], ["0", "1", "2", "3"])

    def test_a_callback_that_writes_does_not_hold_up_the_reader(self) -> None:
        # Another thread holds the write lock, as one blocked on a full pipe would: a cancel
        # from a callback must not stop the reader thread from taking the next answers.
        def cancelled() -> int:
            return int(self.pool.stats()["requests"].get("cancelled", 0))

        before = cancelled()
        spare = self.pool.execute_future("import time\ntime.sleep(20)")
        first = self.pool.execute_future("import time\ntime.sleep(0.3)\n1")
        made: List[Future[ExecuteResult]] = []

        def send_and_cancel(_: object) -> None:
            spare.cancel()
            # A request and its cancel from a callback reach the supervisor in that order.
            made.append(self.pool.execute_future("import time\ntime.sleep(20)"))
            made[0].cancel()

        first.add_done_callback(send_and_cancel)
        second = self.pool.execute_future("import time\ntime.sleep(0.6)\n2")
        with self.pool._write_lock:
            # Both were sent before the lock was taken: only the reader has to move.
            self.assertEqual(first.result(timeout=10).result, "1")
            self.assertEqual(second.result(timeout=10).result, "2")
        self.assertTrue(spare.cancelled() and made[0].cancelled())
        deadline = time.monotonic() + 10
        while cancelled() < before + 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(cancelled(), before + 2)
        self.assertEqual(self.pool.execute("3").result, "3")

    def test_health_stats_packages(self) -> None:
        self.assertEqual(self.pool.health()["ready_workers"], 2)
        self.assertIn("ok", self.pool.stats()["requests"])
        self.assertIn(self.pool.packages()["source"], ("none", "directory", "index"))


class LifetimeTest(unittest.TestCase):
    """Pools of their own: starting, closing, dying."""

    def test_misused_options_send_nothing(self) -> None:
        # Attached to plain pipes: whatever the client writes stays in the pipe, to be read here.
        from_pool, to_client = os.pipe()
        from_client, to_pool = os.pipe()
        with open(from_pool, "rb") as reader, open(from_client, "rb") as sent:
            pool = PoolClient.attach(reader, open(to_pool, "wb"))
            for _, misuse in MISUSES:
                # execute_future: a check that stopped raising fails here instead of waiting
                # for an answer that never comes.
                with self.subTest(misuse=misuse), self.assertRaises(TypeError):
                    pool.execute_future(**{"code": "1", **misuse}).cancel()
            os.close(to_client)  # the "supervisor" closes its stdout: the reader thread ends
            pool.close()
            self.assertEqual(sent.read(), b"")

    def test_context_manager_stops_the_supervisor(self) -> None:
        with PoolClient(["--pool-size", "1", *QUIET]) as pool:
            self.assertEqual(pool.execute("1").result, "1")
            pid = pool.pid
        assert pid is not None
        with self.assertRaises(ProcessLookupError):
            os.kill(pid, 0)
        with self.assertRaises(ConnectionClosedError):
            pool.execute("1")

    def test_a_dead_supervisor_fails_pending_calls(self) -> None:
        pool = PoolClient(["--pool-size", "1", *QUIET], wait_for_workers=1)
        pending = pool.execute_future("import time\ntime.sleep(30)")
        time.sleep(0.2)
        assert pool.pid is not None
        os.kill(pool.pid, signal.SIGKILL)
        with self.assertRaises(ConnectionClosedError) as raised:
            pending.result(timeout=30)
        self.assertEqual(raised.exception.exit_code, -signal.SIGKILL)
        with self.assertRaises(ConnectionClosedError):
            pool.health()
        pool.close()

    def test_a_supervisor_that_cannot_start_fails_calls(self) -> None:
        pool = PoolClient(command=[sys.executable, "-c", "import sys; sys.exit(3)"])
        with self.assertRaises(ConnectionClosedError) as raised:
            pool.execute("1")
        self.assertEqual(raised.exception.exit_code, 3)
        self.assertEqual(pool.close(), 3)
        with self.assertRaises(ConnectionClosedError):
            PoolClient(command=["/nonexistent/deno"])

    def test_attach_to_a_supervisor_started_elsewhere(self) -> None:
        process = subprocess.Popen(
            supervisor_command(["--pool-size", "1", *QUIET]),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert process.stdout is not None and process.stdin is not None
        pool = PoolClient.attach(process.stdout, process.stdin)
        self.assertEqual(pool.execute("2 ** 10").result, "1024")
        pool.close()
        self.assertEqual(process.wait(60), 0)
        process.stdout.close()

    def test_session_lost_with_its_worker(self) -> None:
        with PoolClient(["--pool-size", "1", *QUIET], wait_for_workers=1) as pool:
            pool.execute("x = 1", session_id="doomed")
            worker_pid = pool.health()["workers"][0]["pid"]
            os.kill(worker_pid, signal.SIGKILL)
            deadline = time.monotonic() + 30
            while pool.health()["workers"][0]["pid"] == worker_pid:
                self.assertLess(time.monotonic(), deadline, "no replacement worker")
                time.sleep(0.05)
            with self.assertRaises(SessionNotFoundError) as raised:
                pool.execute("x", session_id="doomed")
            self.assertEqual(raised.exception.data["session_id"], "doomed")


if __name__ == "__main__":
    unittest.main()
