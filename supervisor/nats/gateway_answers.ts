/**
 * Every answer a NATS gateway makes itself (gateway.ts), rather than relaying an instance's:
 * its errors, with their codes, messages and data, and the outcome each is counted as. In one
 * place, as failures.ts has the local pool's.
 *
 * @module
 */

import { ErrorCode, RpcError } from "../../lib/errors.ts";
import type { ExecuteResult, JsonRpcId } from "../../lib/protocol.ts";
import { timeoutResult } from "../failures.ts";
import type { Answer, RequestOutcome } from "../task.ts";

/** An error answer and the outcome it is counted as. */
export type ErrorAnswer = Extract<Answer, { error: RpcError }>;

const OUTCOMES: Record<number, RequestOutcome> = {
  [ErrorCode.Overloaded]: "overloaded",
  [ErrorCode.WorkerDied]: "worker_died",
  [ErrorCode.ShuttingDown]: "shutting_down",
  [ErrorCode.Cancelled]: "cancelled",
  [ErrorCode.SessionNotFound]: "session_not_found",
  [ErrorCode.AnswerTooLarge]: "answer_too_large",
  [ErrorCode.InternalError]: "internal_error",
};

/**
 * An error as an answer, counted by its code.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { RpcError } from "../../lib/errors.ts";
 * import { answerOf } from "./gateway_answers.ts";
 * assert.equal(answerOf(new RpcError(-32001, "gone")).outcome, "worker_died");
 * assert.equal(answerOf(new RpcError(-32602, "bad")).outcome, "rejected");
 * ```
 */
export function answerOf(error: RpcError): ErrorAnswer {
  return { outcome: OUTCOMES[error.code] ?? "rejected", error };
}

/** The gateway stops taking work, or stopped before the request finished. */
export function shuttingDown(detail?: string): RpcError {
  return new RpcError(
    ErrorCode.ShuttingDown,
    `the pool is shutting down${detail ? `; ${detail}` : ""}`,
    { reason: "shutdown" },
  );
}

export function cancelledBeforeRun(id: JsonRpcId): ErrorAnswer {
  return answerOf(
    new RpcError(ErrorCode.Cancelled, "cancelled by the client before it ran", { id }),
  );
}

export function noInstances(service: string): RpcError {
  return new RpcError(
    ErrorCode.Overloaded,
    `overloaded: no instance of NATS service ${service} is connected`,
    { service, instances: 0, reason: "no_instances" },
  );
}

export function notConnected(why: string, service: string, servers: string[]): RpcError {
  return new RpcError(ErrorCode.Overloaded, `overloaded: ${why}; retry later`, {
    service,
    servers,
    reason: "nats_disconnected",
  });
}

export function allBusy(queueDepth: number, maxQueue: number, instances: number): ErrorAnswer {
  return answerOf(
    new RpcError(
      ErrorCode.Overloaded,
      "overloaded: every instance is busy and the gateway's queue is full; retry later",
      { queue_depth: queueDepth, max_queue: maxQueue, instances, reason: "all_busy" },
    ),
  );
}

export function noPackagesAnswer(service: string, reason: string): RpcError {
  return new RpcError(ErrorCode.Overloaded, "no instance answered the packages request", {
    reason,
    service,
  });
}

/** A request longer than one NATS message, for the queue group (which cannot take chunks). */
export function tooLarge(bytes: number, maxPayload: number): ErrorAnswer {
  return {
    outcome: "rejected",
    error: new RpcError(
      ErrorCode.InvalidRequest,
      `Invalid Request: the request is ${bytes} bytes, over the NATS server's max_payload of ` +
        `${maxPayload} bytes`,
      {
        bytes,
        max_payload: maxPayload,
        hint: "send less (files, session_bytes), or raise max_payload in the NATS server's " +
          "configuration (up to 64 MB); answers larger than it are sent in chunks",
      },
    ),
  };
}

/** An instance's answer that breaks the NATS contract. */
export function brokenAnswer(instanceId: string | undefined, reason: string): ErrorAnswer {
  return answerOf(
    new RpcError(
      ErrorCode.InternalError,
      `Internal error: the instance's answer broke the NATS contract (${reason})`,
      { instance_id: instanceId ?? null, reason },
    ),
  );
}

/** The instance holding the session is gone or leaving: the session is lost with it. */
export function sessionLost(sessionId: string, instanceId: string, why: string): ErrorAnswer {
  return answerOf(
    new RpcError(ErrorCode.SessionNotFound, `session ${JSON.stringify(sessionId)} ${why}`, {
      session_id: sessionId,
      instance_id: instanceId,
      reason: why,
      hint: "its namespace is gone; start again, or keep state client-side with return_session",
    }),
  );
}

/** No instance acknowledged the offer, and not every one could say it does not have it. */
export function unacknowledged(instanceId: string | undefined, ackTimeoutMs: number): ErrorAnswer {
  return answerOf(
    new RpcError(
      ErrorCode.WorkerDied,
      `no instance acknowledged the request within ${ackTimeoutMs} ms, and not every ` +
        "instance could say it does not have it (the one NATS gave it to may have died or " +
        "hung, or NATS was away): its fate is unknown, and it was not sent again",
      { instance_id: instanceId ?? null, reason: "unacknowledged", ack_timeout_ms: ackTimeoutMs },
    ),
  );
}

/** The instance running the request died, or stopped answering. */
export function instanceLost(instanceId: string, why: string): ErrorAnswer {
  return answerOf(
    new RpcError(
      ErrorCode.WorkerDied,
      `instance ${instanceId} ${why} while running this request; it was not re-run`,
      { instance_id: instanceId, reason: "instance_lost", detail: why },
    ),
  );
}

/** After NATS came back, the instance did not know the request any more. */
export function lostInOutage(instanceId: string): ErrorAnswer {
  return answerOf(
    new RpcError(
      ErrorCode.WorkerDied,
      `instance ${instanceId} no longer knows the request (lost while NATS was away); it was ` +
        "not re-run",
      { instance_id: instanceId, reason: "lost_in_outage" },
    ),
  );
}

/** The gateway's NATS connection closed for good while the request was out. */
export function connectionClosed(instanceId: string | undefined): ErrorAnswer {
  return answerOf(
    new RpcError(
      ErrorCode.WorkerDied,
      "the gateway's NATS connection closed while the request was out; it was not re-run",
      { instance_id: instanceId ?? null, reason: "nats_closed" },
    ),
  );
}

/** The instance stayed silent past the request's deadline and every grace. */
export function overdue(
  instanceId: string,
  timeoutMs: number,
  timeoutGraceS: number,
  deadlineGraceMs: number,
  ranMs: number,
): ExecuteResult {
  const result = timeoutResult(
    `instance ${instanceId} did not answer within the request's ${timeoutMs} ms + ` +
      `${timeoutGraceS} s grace + ${deadlineGraceMs} ms; it was cancelled there`,
    "",
    ranMs,
  );
  return { ...result, instance_id: instanceId };
}

/** The deadline passed while the request waited for an instance with an idle worker. */
export function neverRan(timeoutMs: number): ExecuteResult {
  return timeoutResult(
    `timed out after ${timeoutMs} ms waiting for an instance with an idle worker; it never ran`,
    "",
    timeoutMs,
  );
}
