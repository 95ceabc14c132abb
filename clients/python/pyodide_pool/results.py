"""What `execute` returns, as typed objects (see `ExecuteResult` in docs/protocol.md).
Base64 fields are decoded to bytes."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any, List, Mapping, Optional


@dataclass(frozen=True)
class PythonError:
    type: str
    message: str
    traceback: str


@dataclass(frozen=True)
class OutputFile:
    """A file the code created or changed; `content` is None past the pool's file cap."""

    path: str
    size: int
    content: Optional[bytes]
    truncated: bool = False


@dataclass(frozen=True)
class Figure:
    format: str
    data: bytes


@dataclass(frozen=True)
class ExecuteResult:
    """How the run ended (`status`: ok, error, timeout, output_limit, memory_limit) and what
    it produced. Python exceptions are results, not raised: check `status` or `ok`."""

    status: str
    stdout: str
    stderr: str
    result: Optional[str]
    error: Optional[PythonError]
    truncated: bool
    duration_ms: float
    worker_id: str
    files: List[OutputFile] = field(default_factory=list)
    figures: List[Figure] = field(default_factory=list)
    session_bytes: Optional[bytes] = None
    session_dropped: Optional[List[str]] = None
    session_moved: Optional[List[str]] = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> "ExecuteResult":
        error = value.get("error")
        moved = value.get("session_moved")
        state = value.get("session_bytes")
        return cls(
            status=value["status"],
            stdout=value.get("stdout", ""),
            stderr=value.get("stderr", ""),
            result=value.get("result"),
            error=PythonError(error["type"], error["message"], error["traceback"]) if error else None,
            truncated=bool(value.get("truncated", False)),
            duration_ms=float(value.get("duration_ms", 0.0)),
            worker_id=str(value.get("worker_id", "")),
            files=[
                OutputFile(
                    path=f["path"],
                    size=f["size"],
                    content=base64.b64decode(f["content_b64"]) if f.get("content_b64") is not None else None,
                    truncated=bool(f.get("truncated", False)),
                )
                for f in value.get("files", [])
            ],
            figures=[Figure(f["format"], base64.b64decode(f["data_b64"])) for f in value.get("figures", [])],
            session_bytes=base64.b64decode(state) if state is not None else None,
            session_dropped=value.get("session_dropped"),
            session_moved=moved["dropped"] if moved else None,
        )
