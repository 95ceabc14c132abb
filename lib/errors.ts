/**
 * Every JSON-RPC error code pyodide-pool answers with, and the error class that carries one.
 *
 * Python-level failures are results (status `error`, `timeout`, ...), never these errors: these
 * say that the request itself could not be served.
 *
 * @module
 */

/** JSON-RPC 2.0 standard codes and the pool's own codes (see docs/protocol.md). */
export const ErrorCode = {
  ParseError: -32700,
  InvalidRequest: -32600,
  MethodNotFound: -32601,
  InvalidParams: -32602,
  InternalError: -32603,
  /** The queue is full: retry later. */
  Overloaded: -32000,
  /** The worker died while running this request; it is never re-run automatically. */
  WorkerDied: -32001,
  /** The pool is shutting down and takes no more work. */
  ShuttingDown: -32002,
  /** The client cancelled the request with `$/cancelRequest`. */
  Cancelled: -32003,
  /** The session does not exist, or was lost with its worker. */
  SessionNotFound: -32004,
  /**
   * The answer would pass the line limit: the pool sends no line it would not take back (a
   * session's state, returned, is sent again with the next request).
   */
  AnswerTooLarge: -32005,
} as const;

export type ErrorCodeValue = typeof ErrorCode[keyof typeof ErrorCode];

/** Data attached to every error: what a caller needs to act on it. */
export type ErrorData = Record<string, unknown>;

/**
 * A JSON-RPC error with a code, a message a person understands and data to act on.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ErrorCode, RpcError } from "./errors.ts";
 * const e = new RpcError(ErrorCode.Overloaded, "queue is full", { max_queue: 100 });
 * assert.deepEqual(e.toJSON(), { code: -32000, message: "queue is full", data: { max_queue: 100 } });
 * ```
 */
export class RpcError extends Error {
  constructor(
    readonly code: number,
    message: string,
    readonly data: ErrorData = {},
  ) {
    super(message);
    this.name = "RpcError";
  }

  toJSON(): { code: number; message: string; data: ErrorData } {
    return { code: this.code, message: this.message, data: this.data };
  }
}

/** What a thrown value says: an Error's message, or the value as text. */
export function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** Wraps anything thrown into an RpcError, keeping RpcErrors as they are. */
export function toRpcError(error: unknown): RpcError {
  if (error instanceof RpcError) return error;
  const message = messageOf(error);
  return new RpcError(ErrorCode.InternalError, `Internal error: ${message}`, {
    reason: message,
  });
}

/** An invalid-params error naming the field at fault. */
export function invalidParams(field: string, problem: string): RpcError {
  return new RpcError(ErrorCode.InvalidParams, `Invalid params: ${field} ${problem}`, {
    field,
    problem,
  });
}
