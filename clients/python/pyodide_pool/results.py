"""What `execute` returns, as typed objects with the names of `ExecuteResult` in lib/protocol.ts.
Base64 fields keep their wire form; `OutputFile.content` and `Figure.data` decode them."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional


@dataclass(frozen=True)
class PythonError:
    """The exception that ended a run with status `error` (also set for `timeout`,
    `memory_limit` and `fs_limit`)."""

    type: str
    message: str
    traceback: str


@dataclass(frozen=True)
class OutputFile:
    """A file the code created or changed. `content_b64` is None past the pool's file cap
    (`truncated` is then True)."""

    path: str
    size: int
    content_b64: Optional[str]
    truncated: bool = False

    @property
    def content(self) -> Optional[bytes]:
        """The file's bytes, or None past the cap."""
        return None if self.content_b64 is None else base64.b64decode(self.content_b64)


@dataclass(frozen=True)
class Figure:
    """An open matplotlib figure, as an image."""

    format: str
    data_b64: str

    @property
    def data(self) -> bytes:
        return base64.b64decode(self.data_b64)


@dataclass(frozen=True)
class ExecuteResult:
    """How the run ended (`status`: ok, error, timeout, output_limit, memory_limit, fs_limit) and what
    it produced. Python exceptions and timeouts are results, not raised: check `status`."""

    status: str
    stdout: str
    stderr: str
    result: Optional[str]
    """`repr()` of the last expression, or None."""
    error: Optional[PythonError]
    truncated: bool
    """True when stdout or stderr was cut at the output cap."""
    duration_ms: float
    worker_id: str
    files: List[OutputFile] = field(default_factory=list)
    figures: List[Figure] = field(default_factory=list)
    session_bytes: Optional[str] = None
    """With `return_session`: the updated state (base64), to pass back as `session_bytes`."""
    session_dropped: Optional[List[str]] = None
    """With `return_session`: the names that could not be kept."""
    session_moved: Optional[Dict[str, List[str]]] = None
    """After a session moved to a new worker: `{"dropped": [names that could not move]}`."""
    instance_id: Optional[str] = None
    """The instance of a NATS service that ran it (a supervisor started with `--nats`, or reached
    through a gateway); None otherwise."""

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> ExecuteResult:
        """The result from the `result` member of an `execute` response."""
        error = value.get("error")
        return cls(
            status=str(value["status"]),
            stdout=value.get("stdout", ""),
            stderr=value.get("stderr", ""),
            result=value.get("result"),
            error=(
                PythonError(error["type"], error["message"], error.get("traceback", ""))
                if error
                else None
            ),
            truncated=bool(value.get("truncated", False)),
            duration_ms=float(value.get("duration_ms", 0.0)),
            worker_id=str(value.get("worker_id", "")),
            files=[
                OutputFile(
                    path=f["path"],
                    size=int(f["size"]),
                    content_b64=f.get("content_b64"),
                    truncated=bool(f.get("truncated", False)),
                )
                for f in value.get("files") or []
            ],
            figures=[Figure(f["format"], f["data_b64"]) for f in value.get("figures") or []],
            session_bytes=value.get("session_bytes"),
            session_dropped=value.get("session_dropped"),
            session_moved=value.get("session_moved"),
            instance_id=value.get("instance_id"),
        )
