/**
 * One `execute` request from its admission to its answer. A task is answered once: the first
 * answer finishes it, records its outcome in the `requests` counter and clears its queue
 * deadline; any later answer is ignored.
 *
 * @module
 */

import type { RpcError } from "../lib/errors.ts";
import type { ExecuteParams, ExecuteResult, ExecuteStatus } from "../lib/protocol.ts";
import type { Counter } from "./stats.ts";

/** How a request ended, as the `requests` counter names it: a status, or an error's name. */
export type RequestOutcome =
  | ExecuteStatus
  | "overloaded"
  | "cancelled"
  | "shutting_down"
  | "session_not_found"
  | "worker_died"
  | "rejected"
  | "internal_error"
  /** The code ran, but its answer would pass --max-line-bytes (-32005). */
  | "answer_too_large";

/** A task's answer: a result (counted by its status), or an error and its outcome's name. */
export type Answer =
  | { result: ExecuteResult }
  | { error: RpcError; outcome: RequestOutcome };

/** Receives a streaming request's output as it is written. */
export type OutputListener = (output: { stream: string; text: string }) => void;

/**
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Task } from "./task.ts";
 * import { Counter } from "./stats.ts";
 * const requests = new Counter();
 * const task = new Task({ code: "1" }, 1, undefined, 1000, requests);
 * task.finish({ result: { status: "ok" } as never });
 * task.finish({ result: { status: "timeout" } as never }); // ignored
 * assert.equal(requests.total, 1);
 * assert.equal((await task.answer).status, "ok");
 * ```
 */
export class Task {
  /** When it was admitted (ms, monotonic): its deadline counts from here. */
  readonly arrivedAt = performance.now();
  /** The result, or the RpcError it is rejected with. */
  readonly answer: Promise<ExecuteResult>;
  #resolve!: (result: ExecuteResult) => void;
  #reject!: (error: RpcError) => void;
  #queueTimer: ReturnType<typeof setTimeout> | undefined;
  #finished = false;

  constructor(
    readonly params: ExecuteParams,
    /** The client's request id, for cancellation. */
    readonly key: unknown,
    readonly onOutput: OutputListener | undefined,
    /** The request's limit, waiting included. */
    readonly timeoutMs: number,
    private readonly requests: Counter,
  ) {
    this.answer = new Promise((resolve, reject) => {
      this.#resolve = resolve;
      this.#reject = reject;
    });
  }

  /** Answered already. */
  get finished(): boolean {
    return this.#finished;
  }

  /** Calls `expire` when the deadline passes, unless the task started or finished before. */
  expireInQueue(expire: () => void): void {
    this.#queueTimer = setTimeout(expire, this.timeoutMs);
  }

  /** The task leaves the queue for a worker: the queue deadline no longer applies. */
  start(): void {
    clearTimeout(this.#queueTimer);
  }

  /** Answers the task, if it is not answered yet; false if it was. */
  finish(answer: Answer): boolean {
    if (this.#finished) return false;
    this.#finished = true;
    clearTimeout(this.#queueTimer);
    if ("result" in answer) {
      this.requests.add(answer.result.status);
      this.#resolve(answer.result);
    } else {
      this.requests.add(answer.outcome);
      this.#reject(answer.error);
    }
    return true;
  }
}
