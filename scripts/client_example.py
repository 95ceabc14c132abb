#!/usr/bin/env python3
"""Drive pyodide-pool from Python with the standard library only.

Starts the supervisor as a subprocess, sends JSON-RPC requests on its stdin from several
threads at once, and matches responses to requests by id on a reader thread.

    python3 scripts/client_example.py                      # runs `npx deno@2.9.6 task start`
    python3 scripts/client_example.py -- deno task start --pool-size 2
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Dict, List, Optional


class RpcError(Exception):
    """A JSON-RPC error response: `code`, `message` and `data` as the server sent them."""

    def __init__(self, error: Dict[str, Any]) -> None:
        super().__init__(f"{error['code']}: {error['message']}")
        self.code: int = error["code"]
        self.data: Dict[str, Any] = error.get("data") or {}


class PoolClient:
    """A thread-safe client for one supervisor process."""

    def __init__(self, command: List[str]) -> None:
        self._process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0
        )
        self._ids = itertools.count(1)
        self._pending: Dict[int, Future] = {}
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def call(self, method: str, params: Optional[Dict[str, Any]] = None) -> Any:
        request_id = next(self._ids)
        future: Future = Future()
        message = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            message["params"] = params
        line = (json.dumps(message) + "\n").encode()
        with self._lock:
            self._pending[request_id] = future
            self._process.stdin.write(line)
        return future.result()

    def execute(self, code: str, **options: Any) -> Dict[str, Any]:
        return self.call("execute", {"code": code, **options})

    def close(self) -> int:
        """Closes stdin (the supervisor finishes what it has, then exits)."""
        self._process.stdin.close()
        return self._process.wait(timeout=60)

    def _read(self) -> None:
        for raw in self._process.stdout:
            message = json.loads(raw)
            for response in message if isinstance(message, list) else [message]:
                future = self._pending.pop(response.get("id"), None)
                if future is None:
                    continue
                if "error" in response:
                    future.set_exception(RpcError(response["error"]))
                else:
                    future.set_result(response["result"])
        for future in self._pending.values():
            future.set_exception(ConnectionError("the supervisor exited"))


def main(argv: List[str]) -> int:
    command = argv[argv.index("--") + 1 :] if "--" in argv else ["npx", "deno@2.9.6", "task", "start"]
    client = PoolClient(command)

    result = client.execute("sum(i * i for i in range(10))")
    print("sum of squares:", result["result"])

    result = client.execute("name = input()\nprint(f'hello {name}')", stdin="pyodide\n")
    print("stdout:", result["stdout"].strip())

    result = client.execute("1 / 0")
    print("error:", result["status"], result["error"]["type"])

    result = client.execute("while True: pass", timeout_ms=200)
    print("timeout:", result["status"])

    with ThreadPoolExecutor(max_workers=4) as threads:
        results = list(threads.map(lambda i: client.execute(f"{i} ** 2"), range(8)))
    print("parallel:", [r["result"] for r in results])

    try:
        client.execute(42)  # type: ignore[arg-type]
    except RpcError as error:
        print("rpc error:", error.code, error.data.get("field"))

    health = client.call("health")
    print("health:", health["status"], health["ready_workers"], "workers")
    print("exit code:", client.close())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
