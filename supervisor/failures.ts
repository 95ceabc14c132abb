/**
 * What the client gets when the supervisor, not Python, ends a request: a `timeout` result of
 * its own, or the error that says why a worker did not answer.
 *
 * @module
 */

import { ErrorCode, RpcError } from "../lib/errors.ts";
import type { ExecuteResult } from "../lib/protocol.ts";
import type { Answer } from "./task.ts";
import { WorkerDeadlineError, WorkerExitedError } from "./worker_process.ts";

/** A timeout result produced by the supervisor itself (queue wait or unresponsive worker). */
export function timeoutResult(
  message: string,
  workerId: string,
  durationMs: number,
): ExecuteResult {
  return {
    status: "timeout",
    stdout: "",
    stderr: "",
    truncated: false,
    result: null,
    error: { type: "TimeoutError", message, traceback: "" },
    files: [],
    figures: [],
    duration_ms: durationMs,
    worker_id: workerId,
  };
}

/** What to do about an answer past --max-line-bytes (-32005), for its error's message. */
export const ANSWER_LIMIT_HINT = "the pool sends no line longer than it accepts " +
  "(--max-line-bytes); return less (files, session state), or start the pool with a larger " +
  "--max-line-bytes";

/** What the pool knows of a request whose worker call failed. */
export interface FailedRun {
  workerId: string;
  /** The request's limit, and the grace the worker had past it, in seconds. */
  timeoutMs: number;
  timeoutGraceS: number;
  /** How long the call ran. */
  ranMs: number;
  /** The pool is shutting down: it ended the worker. */
  closing: boolean;
}

/**
 * The answer for a request whose `execute` call failed with `error`: a worker past its
 * deadline gives a `timeout` result (the pool kills it), a worker that exited gives -32001
 * (or -32002 when the pool ended it while shutting down), an error the worker answered goes
 * to the client as it is, and anything else is an internal error.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { answerForFailure } from "./failures.ts";
 * const answer = answerForFailure(new Error("boom"), {
 *   workerId: "w1", timeoutMs: 1000, timeoutGraceS: 5, ranMs: 3, closing: false,
 * });
 * assert.ok("error" in answer);
 * assert.equal(answer.error.code, -32603);
 * assert.equal(answer.outcome, "internal_error");
 * ```
 */
export function answerForFailure(error: unknown, run: FailedRun): Answer {
  const { workerId } = run;
  if (error instanceof WorkerDeadlineError) {
    return {
      result: timeoutResult(
        `worker ${workerId} did not stop within ${run.timeoutMs} ms + ${run.timeoutGraceS} s grace; it was killed and replaced`,
        workerId,
        run.ranMs,
      ),
    };
  }
  if (error instanceof WorkerExitedError && run.closing) {
    return {
      outcome: "shutting_down",
      error: new RpcError(
        ErrorCode.ShuttingDown,
        "the pool shut down before the request finished",
        {
          worker_id: workerId,
          reason: "shutdown grace period expired",
        },
      ),
    };
  }
  if (error instanceof WorkerExitedError) {
    return {
      outcome: "worker_died",
      error: new RpcError(
        ErrorCode.WorkerDied,
        `${error.message} while running this request; it was not re-run`,
        {
          worker_id: workerId,
          exit_code: error.exit.code,
          signal: error.exit.signal,
          reason: error.exit.reason ?? "crashed",
        },
      ),
    };
  }
  if (error instanceof RpcError) {
    return {
      outcome: error.code === ErrorCode.SessionNotFound
        ? "session_not_found"
        : error.code === ErrorCode.Cancelled
        ? "cancelled"
        : "rejected",
      error,
    };
  }
  return {
    outcome: "internal_error",
    error: new RpcError(ErrorCode.InternalError, String(error), { worker_id: workerId }),
  };
}
