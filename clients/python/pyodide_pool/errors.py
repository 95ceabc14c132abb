"""Exceptions: one per JSON-RPC error code the pool answers with (docs/protocol.md), and one
for a pool that is gone."""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Type


class PoolError(Exception):
    """Base of every error this client raises."""


class ConnectionClosedError(PoolError):
    """The supervisor exited or closed its output: pending and later calls fail with this."""

    def __init__(self, message: str, exit_code: Optional[int] = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class RpcError(PoolError):
    """A JSON-RPC error response: the request could not be served. `data` says what to do."""

    code: int = 0

    def __init__(self, code: int, message: str, data: Optional[Dict[str, Any]] = None) -> None:
        super().__init__(f"{message} (error {code})")
        self.code = code
        self.message = message
        self.data: Dict[str, Any] = data or {}


class ParseError(RpcError):
    code = -32700


class InvalidRequestError(RpcError):
    code = -32600


class MethodNotFoundError(RpcError):
    code = -32601


class InvalidParamsError(RpcError):
    """`data["field"]` names the param at fault."""

    code = -32602


class InternalError(RpcError):
    code = -32603


class OverloadedError(RpcError):
    """The queue is full: retry later."""

    code = -32000


class WorkerDiedError(RpcError):
    """The worker died while running the request; it was not re-run."""

    code = -32001


class ShuttingDownError(RpcError):
    code = -32002


class CancelledError(RpcError):
    code = -32003


class SessionNotFoundError(RpcError):
    """The session expired, or was lost with its worker."""

    code = -32004


_BY_CODE: Dict[int, Type[RpcError]] = {
    cls.code: cls
    for cls in (
        ParseError,
        InvalidRequestError,
        MethodNotFoundError,
        InvalidParamsError,
        InternalError,
        OverloadedError,
        WorkerDiedError,
        ShuttingDownError,
        CancelledError,
        SessionNotFoundError,
    )
}


def rpc_error_from(error: Mapping[str, Any]) -> RpcError:
    """The exception for an `error` member of a response."""
    code = int(error.get("code", 0))
    return _BY_CODE.get(code, RpcError)(code, str(error.get("message", "")), error.get("data"))
