/**
 * A run's outcome, and which status it gets: how each way a run can end becomes an outcome,
 * which status wins when more than one thing stopped the run, and the texts of the errors a
 * client sees for a limit. The Python thread, `PythonHost` and `worker_server.ts` all take
 * them from here.
 *
 * @module
 */

import type { ExecuteResult, ExecuteStatus, PythonError } from "../lib/protocol.ts";
import type { Crash } from "./crash.ts";
import { InterruptReason } from "./messages.ts";
import type { RuntimeReport } from "./runtime_contract.ts";

/** A finished run: everything of the result but what the main thread adds. */
export type RunOutcome =
  & Omit<ExecuteResult, "status" | "duration_ms" | "worker_id">
  & {
    /**
     * `cancelled`, `session_lost` and `session_refused` never reach a client as a status:
     * they become errors -32003, -32004 (the error's message says why the session is gone)
     * and -32602 (the session is another tenant's).
     */
    status: ExecuteStatus | "cancelled" | "session_lost" | "session_refused";
  };

/** How a stopped run was stopped (`PythonHost`). */
export type StopStep = "interrupt" | "repeated_interrupt" | "interpreter_restart";

/**
 * How the code ended, before the thread adds its output and files: the runtime's report, or
 * what the thread reports in its place (a crash, files that could not be written, packages
 * that did not load, a Python exception that escaped the runtime).
 */
export type CodeEnd =
  & Omit<RuntimeReport, "status">
  & { status: RuntimeReport["status"] | "crashed" };

/** The code ended in an error that the thread, not the runtime, reports. */
export function errorEnd(type: string, message: string, traceback = ""): CodeEnd {
  return { status: "error", result: null, error: { type, message, traceback } };
}

/** The code ended the interpreter (crash.ts): `exited` with its code, or `crashed`. */
export function crashEnd(crash: Crash): CodeEnd {
  return crash.kind === "exited"
    ? { status: "exited", exit_code: crash.exitCode, result: null, error: null }
    : {
      status: "crashed",
      result: null,
      error: { type: "InterpreterCrash", message: crash.reason, traceback: "" },
    };
}

/** The runtime's report was not one it writes: the code replaced part of what it uses. */
export const unreportedEnd = (): CodeEnd =>
  errorEnd(
    "RuntimeError",
    "the result could not be reported: the code replaced part of what the runtime uses",
  );

/** What the thread saw of a run, besides how its code ended. */
export interface RunSeen {
  /** The interpreter crashed or exited (crash.ts), during the run or its report. */
  crashed: boolean;
  /** Why the run was stopped as it closed, one of `InterruptReason` (`None`: it was not). */
  closedFor: number;
  /** A write was refused for want of room (fs_quota.ts) while the run was open. */
  fsFull: boolean;
}

/**
 * The status of a run whose code ended as `end`. The first that applies wins:
 * 1. a crash or exit of the interpreter: how it ended is the answer, whatever stopped it
 *    meanwhile;
 * 2. the output cap, then the memory ceiling, when they stopped the run: the limit is the
 *    answer, however the code then ended;
 * 3. a timeout, or a cancel, when the code did not end `ok`: a stop that the code outran
 *    (or caught) does not undo its result;
 * 4. a MemoryError: the Wasm heap's cap (heap_cap.ts) made malloc fail;
 * 5. an error after a write was refused for want of room: the file quota;
 * 6. else, as the code ended.
 * A stop that came after the run closed is not seen here (`ThreadRunPhase.closedFor`).
 */
export function statusOf(end: CodeEnd, seen: RunSeen): RunOutcome["status"] {
  if (seen.crashed) return end.status;
  if (seen.closedFor === InterruptReason.OutputLimit) return "output_limit";
  if (seen.closedFor === InterruptReason.MemoryLimit) return "memory_limit";
  if (end.status !== "ok" && seen.closedFor === InterruptReason.Timeout) return "timeout";
  if (end.status !== "ok" && seen.closedFor === InterruptReason.Cancelled) return "cancelled";
  if (end.error?.type === "MemoryError") return "memory_limit";
  if (end.status === "error" && seen.fsFull) return "fs_limit";
  return end.status;
}

/** An outcome without output, files or result: the run never started, or its end was lost. */
function emptyOutcome(status: RunOutcome["status"], error: PythonError): RunOutcome {
  return {
    status,
    stdout: "",
    stderr: "",
    truncated: false,
    result: null,
    error,
    files: [],
    figures: [],
  };
}

/** The outcome of a run stopped (timeout, cancel, one of `InterruptReason`) with no output. */
export function stoppedOutcome(reason: number, type: string, message: string): RunOutcome {
  const status = reason === InterruptReason.Cancelled
    ? "cancelled"
    : reason === InterruptReason.MemoryLimit
    ? "memory_limit"
    : "timeout";
  return emptyOutcome(status, { type, message, traceback: "" });
}

/** The outcome of a run stopped before its code started. */
export const stoppedBeforeStart = (reason: number): RunOutcome =>
  stoppedOutcome(reason, "KeyboardInterrupt", "stopped before the code started");

/** The outcome of a run whose code ignored the interrupts: its interpreter was replaced. */
export const ignoredInterrupts = (reason: number): RunOutcome =>
  stoppedOutcome(
    reason,
    reason === InterruptReason.MemoryLimit ? "MemoryError" : "TimeoutError",
    "the code ignored repeated interrupts; its output was lost with the interpreter",
  );

/** The outcome of a run whose session is gone, or is another tenant's: it never started. */
export function sessionOutcome(
  status: "session_lost" | "session_refused",
  type: string,
  message: string,
): RunOutcome {
  return emptyOutcome(status, { type, message, traceback: "" });
}

/** The limits that a client's error for a limit names. */
export interface Limits {
  /** Cap for stdout and for stderr, in bytes (`--max-output-bytes`). */
  maxOutputBytes: number;
  /** Cap on the Wasm heap (`--max-heap-mb`). */
  maxHeapMb: number;
  /** Ceiling on the worker's resident memory (`--max-rss-mb`). */
  maxRssMb: number;
  /** Cap on a request's files (`--max-fs-mb`). */
  maxFsMb: number;
}

/** The error a client sees for a run that did not end on its own (or the run's own error). */
export function limitError(
  report: Pick<RunOutcome, "status" | "error"> & { stoppedBy?: StopStep },
  timeoutMs: number,
  limits: Limits,
): PythonError | null {
  const traceback = report.error?.traceback ?? "";
  switch (report.status) {
    case "timeout":
      return {
        type: "TimeoutError",
        message: `execution exceeded timeout_ms=${timeoutMs}; stopped by ${report.stoppedBy}` +
          (report.stoppedBy === "interpreter_restart" ? ` (${report.error?.message})` : ""),
        traceback,
      };
    case "output_limit":
      return {
        type: "OutputLimitError",
        message: `output exceeded the cap of ${limits.maxOutputBytes} bytes per stream`,
        traceback,
      };
    case "memory_limit":
      return {
        type: "MemoryError",
        // Stopped by the worker: its whole memory passed the ceiling (see PythonHost).
        message: report.stoppedBy
          ? `out of memory: the worker's memory passed its ceiling of ${limits.maxRssMb} MB; ` +
            `stopped by ${report.stoppedBy}`
          : `out of memory: the Wasm heap is capped at ${limits.maxHeapMb} MB`,
        traceback,
      };
    case "fs_limit":
      return {
        type: "OSError",
        message: `no space left on device: a request's files are capped at ${limits.maxFsMb} MB ` +
          "(the write past it failed with ENOSPC)",
        traceback,
      };
    default:
      return report.error;
  }
}
