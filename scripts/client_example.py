#!/usr/bin/env python3
"""Drive pyodide-pool from Python with the client package in clients/python (standard library
only): start a pool, run code, stream output, keep state, handle errors, run requests from
threads and from asyncio.

    python3 scripts/client_example.py
"""

from __future__ import annotations

import asyncio
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "clients" / "python"))

from pyodide_pool import ExecuteResult, InvalidParamsError, PoolClient  # noqa: E402


def main() -> int:
    with PoolClient(["--pool-size", "2", "--log-level", "warning"], wait_for_workers=2) as pool:
        print("sum of squares:", pool.execute("sum(i * i for i in range(10))").result)

        result = pool.execute("name = input()\nprint(f'hello {name}')", stdin="pyodide\n")
        print("stdout:", result.stdout.strip())

        result = pool.execute("1 / 0")
        print("error:", result.status, result.error.type if result.error else None)

        print("timeout:", pool.execute("while True: pass", timeout_ms=200).status)

        chunks: list[tuple[str, str]] = []
        pool.execute(
            "for i in range(3): print(i)",
            on_output=lambda stream, text: chunks.append((stream, text)),
        )
        print("streamed:", "".join(text for _, text in chunks).split())

        state = pool.execute("total = 10", return_session=True).session_bytes
        print("session:", pool.execute("total * 2", session_bytes=state).result)

        with ThreadPoolExecutor(max_workers=4) as threads:
            results = list(threads.map(lambda i: pool.execute(f"{i} ** 2"), range(8)))
        print("parallel:", [r.result for r in results])

        async def gathered() -> list[ExecuteResult]:
            return await asyncio.gather(*(pool.execute_async(f"{i} * 10") for i in range(4)))

        print("asyncio:", [r.result for r in asyncio.run(gathered())])

        try:
            pool.execute("1", timeout_ms=-5)
        except InvalidParamsError as error:
            print("rpc error:", error.code, error.data.get("field"))

        health = pool.health()
        print("health:", health["status"], health["ready_workers"], "workers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
