"""Python client for pyodide-pool: run untrusted Python on a pool of warm Pyodide workers.

    from pyodide_pool import Pool

    with Pool(["--pool-size", "2"]) as pool:
        print(pool.execute("6 * 7").result)  # '42'
"""

from .errors import (
    CancelledError,
    ConnectionClosedError,
    InternalError,
    InvalidParamsError,
    InvalidRequestError,
    MethodNotFoundError,
    OverloadedError,
    ParseError,
    PoolError,
    RpcError,
    SessionNotFoundError,
    ShuttingDownError,
    WorkerDiedError,
)
from .pool import Pool, supervisor_command
from .results import ExecuteResult, Figure, OutputFile, PythonError

__all__ = [
    "CancelledError",
    "ConnectionClosedError",
    "ExecuteResult",
    "Figure",
    "InternalError",
    "InvalidParamsError",
    "InvalidRequestError",
    "MethodNotFoundError",
    "OutputFile",
    "OverloadedError",
    "ParseError",
    "Pool",
    "PoolError",
    "PythonError",
    "RpcError",
    "SessionNotFoundError",
    "ShuttingDownError",
    "WorkerDiedError",
    "supervisor_command",
]
