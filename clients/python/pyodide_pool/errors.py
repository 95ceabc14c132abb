"""Exceptions: one per JSON-RPC error code the pool answers with (lib/errors.ts, with the class
names of clients/typescript/client.ts), and one for a pool that is gone."""

from __future__ import annotations

from enum import IntEnum
from typing import Any, Dict, Mapping, Optional, Type


class ErrorCode(IntEnum):
    """Every JSON-RPC error code pyodide-pool answers with (`ErrorCode` in lib/errors.ts)."""

    ParseError = -32700
    InvalidRequest = -32600
    MethodNotFound = -32601
    InvalidParams = -32602
    InternalError = -32603
    Overloaded = -32000
    """The queue is full: retry later."""
    WorkerDied = -32001
    """The worker died while running this request; it is never re-run automatically."""
    ShuttingDown = -32002
    """The pool is shutting down and takes no more work."""
    Cancelled = -32003
    """The client cancelled the request with `$/cancelRequest`."""
    SessionNotFound = -32004
    """The session does not exist, or was lost with its worker."""
    AnswerTooLarge = -32005
    """The answer would pass --max-line-bytes, which the pool would not take back."""


class PoolError(Exception):
    """Base of every error this client raises."""


class ConnectionClosedError(PoolError):
    """The supervisor exited or closed its output: pending and later calls fail with this.
    `exit_code` is its exit code when known (negative: killed by that signal)."""

    def __init__(self, message: str, exit_code: Optional[int] = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class RpcError(PoolError):
    """A JSON-RPC error response: the request could not be served. `data` says what to do."""

    def __init__(self, code: int, message: str, data: Optional[Dict[str, Any]] = None) -> None:
        super().__init__(f"{message} (error {code})")
        self.code = code
        self.message = message
        self.data: Dict[str, Any] = data if data is not None else {}


class ParseError(RpcError):
    """-32700: the request line was not JSON."""


class InvalidRequestError(RpcError):
    """-32600: not a valid JSON-RPC request."""


class MethodNotFoundError(RpcError):
    """-32601: no such method (or `shutdown` without --allow-shutdown)."""


class InvalidParamsError(RpcError):
    """-32602: a param is invalid; `data["field"]` names it."""


class InternalError(RpcError):
    """-32603: the pool failed unexpectedly."""


class OverloadedError(RpcError):
    """-32000: the queue is full; retry later."""


class WorkerDiedError(RpcError):
    """-32001: the worker died while running the request; it was not re-run."""


class ShuttingDownError(RpcError):
    """-32002: the pool is shutting down."""


class CancelledError(RpcError):
    """-32003: cancelled (the request's future was cancelled)."""


class SessionNotFoundError(RpcError):
    """-32004: the session does not exist, expired, or was lost with its worker."""


class AnswerTooLargeError(RpcError):
    """-32005: the answer would pass --max-line-bytes (a session's state, files): return less,
    or start the pool with a larger limit. `data["largest_fields"]` names what took the room."""


ERROR_CLASSES: Dict[int, Type[RpcError]] = {
    ErrorCode.ParseError: ParseError,
    ErrorCode.InvalidRequest: InvalidRequestError,
    ErrorCode.MethodNotFound: MethodNotFoundError,
    ErrorCode.InvalidParams: InvalidParamsError,
    ErrorCode.InternalError: InternalError,
    ErrorCode.Overloaded: OverloadedError,
    ErrorCode.WorkerDied: WorkerDiedError,
    ErrorCode.ShuttingDown: ShuttingDownError,
    ErrorCode.Cancelled: CancelledError,
    ErrorCode.SessionNotFound: SessionNotFoundError,
    ErrorCode.AnswerTooLarge: AnswerTooLargeError,
}


def rpc_error_from(error: Mapping[str, Any]) -> RpcError:
    """An error response's `error` member as the exception class for its code (RpcError for
    the others)."""
    try:
        code = int(error.get("code", 0))
    except (TypeError, ValueError):
        code = 0
    data = error.get("data")
    return ERROR_CLASSES.get(code, RpcError)(
        code, str(error.get("message", "")), data if isinstance(data, dict) else {}
    )
