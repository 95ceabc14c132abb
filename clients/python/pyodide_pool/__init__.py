"""Python client for pyodide-pool: run untrusted Python on a pool of warm Pyodide workers.

    from pyodide_pool import PoolClient

    with PoolClient(["--pool-size", "2"]) as pool:
        print(pool.execute("6 * 7").result)  # '42'
"""

from .errors import (
    AnswerTooLargeError,
    CancelledError,
    ConnectionClosedError,
    ErrorCode,
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
    rpc_error_from,
)
from .client import OutputCallback, PoolClient, deno_command, project_root, supervisor_command
from .results import ExecuteResult, Figure, OutputFile, PythonError

__all__ = [
    "AnswerTooLargeError",
    "CancelledError",
    "ConnectionClosedError",
    "ErrorCode",
    "ExecuteResult",
    "Figure",
    "InternalError",
    "InvalidParamsError",
    "InvalidRequestError",
    "MethodNotFoundError",
    "OutputCallback",
    "OutputFile",
    "OverloadedError",
    "ParseError",
    "PoolClient",
    "PoolError",
    "PythonError",
    "RpcError",
    "SessionNotFoundError",
    "ShuttingDownError",
    "WorkerDiedError",
    "deno_command",
    "project_root",
    "rpc_error_from",
    "supervisor_command",
]
