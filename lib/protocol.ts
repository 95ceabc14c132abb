/**
 * The wire protocol: JSON-RPC 2.0 message shapes, their validation, and the `execute`
 * method's params and result. Everything that arrives from outside passes through here once;
 * code past this module trusts the typed values.
 *
 * @module
 */

import { ErrorCode, invalidParams, RpcError } from "./errors.ts";

export type JsonRpcId = string | number | null;
export type Params = unknown[] | Record<string, unknown>;

export interface RequestMessage {
  jsonrpc: "2.0";
  id: JsonRpcId;
  method: string;
  params?: Params;
}

export interface NotificationMessage {
  jsonrpc: "2.0";
  method: string;
  params?: Params;
}

export interface ResponseMessage {
  jsonrpc: "2.0";
  id: JsonRpcId;
  result?: unknown;
  error?: { code: number; message: string; data?: unknown };
}

/** What one inbound JSON value is, once checked against the JSON-RPC 2.0 rules. */
export type InboundMessage =
  | { kind: "request"; message: RequestMessage }
  | { kind: "notification"; message: NotificationMessage }
  | { kind: "invalid"; id: JsonRpcId; error: RpcError };

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function isValidId(value: unknown): value is JsonRpcId {
  return value === null || typeof value === "string" ||
    (typeof value === "number" && Number.isFinite(value));
}

/**
 * Checks one JSON value (a whole message, or one element of a batch) against JSON-RPC 2.0.
 *
 * Hand-written because the json-rpc-2.0 package lets through what the specification rejects
 * (a numeric `method` goes unanswered, scalar `params` are accepted, `null` is a parse error).
 *
 * @example
 * ```ts
 * import { classifyMessage } from "./protocol.ts";
 * console.assert(classifyMessage({ jsonrpc: "2.0", method: 1 }).kind === "invalid");
 * console.assert(classifyMessage({ jsonrpc: "2.0", method: "ping", id: 1 }).kind === "request");
 * ```
 */
export function classifyMessage(value: unknown): InboundMessage {
  const invalid = (problem: string): InboundMessage => ({
    kind: "invalid",
    id: isRecord(value) && isValidId(value.id) ? value.id : null,
    error: new RpcError(ErrorCode.InvalidRequest, `Invalid Request: ${problem}`, { problem }),
  });
  if (!isRecord(value)) return invalid("a message must be a JSON object");
  if (value.jsonrpc !== "2.0") return invalid('"jsonrpc" must be exactly "2.0"');
  if (typeof value.method !== "string") return invalid('"method" must be a string');
  if (
    "params" in value && !Array.isArray(value.params) && !isRecord(value.params)
  ) return invalid('"params" must be an array or an object when present');
  const message = value as unknown as RequestMessage;
  if (!("id" in value)) return { kind: "notification", message };
  if (!isValidId(value.id)) return invalid('"id" must be a string, a number or null');
  return { kind: "request", message };
}

/** A success response line's object. */
export function resultResponse(id: JsonRpcId, result: unknown): ResponseMessage {
  return { jsonrpc: "2.0", id, result };
}

/** An error response line's object. */
export function errorResponse(id: JsonRpcId, error: RpcError): ResponseMessage {
  return { jsonrpc: "2.0", id, error: error.toJSON() };
}

/** The `execute` params the pool understands today. */
export interface ExecuteParams {
  code: string;
  /** Wall-clock limit for the Python code, in milliseconds. */
  timeout_ms?: number;
  /** What `input()` and `sys.stdin` read; EOF when absent. */
  stdin?: string;
}

/** Params named in the design that later releases implement; named so the error says so. */
const PLANNED_EXECUTE_PARAMS = new Set([
  "session_id",
  "session_bytes",
  "return_session",
  "files",
  "packages",
  "stream",
]);

/**
 * Validates `execute` params, rejecting unknown fields so that a typo is an error rather
 * than an option silently ignored.
 *
 * @example
 * ```ts
 * import { parseExecuteParams } from "./protocol.ts";
 * console.assert(parseExecuteParams({ code: "1 + 1" }).code === "1 + 1");
 * ```
 */
export function parseExecuteParams(params: unknown): ExecuteParams {
  if (!isRecord(params)) {
    throw invalidParams("params", 'must be an object such as {"code": "print(1)"}');
  }
  for (const key of Object.keys(params)) {
    if (key === "code" || key === "timeout_ms" || key === "stdin") continue;
    if (PLANNED_EXECUTE_PARAMS.has(key)) {
      throw invalidParams(key, "is not supported by this version of pyodide-pool");
    }
    throw invalidParams(key, "is not a known execute parameter");
  }
  const { code, timeout_ms, stdin } = params;
  if (typeof code !== "string") throw invalidParams("code", "must be a string of Python source");
  if (
    timeout_ms !== undefined &&
    (typeof timeout_ms !== "number" || !Number.isFinite(timeout_ms) || timeout_ms <= 0)
  ) throw invalidParams("timeout_ms", "must be a positive number of milliseconds");
  if (stdin !== undefined && typeof stdin !== "string") {
    throw invalidParams("stdin", "must be a string");
  }
  return { code, timeout_ms, stdin };
}

/** How a Python run ended. Python-level outcomes are results, not JSON-RPC errors. */
export type ExecuteStatus = "ok" | "error" | "timeout" | "output_limit" | "memory_limit";

export interface PythonError {
  type: string;
  message: string;
  traceback: string;
}

/** The `execute` result, as the client receives it. */
export interface ExecuteResult {
  status: ExecuteStatus;
  stdout: string;
  stderr: string;
  /** True when stdout or stderr was cut at the output cap. */
  truncated: boolean;
  /** `repr()` of the last expression, or null. */
  result: string | null;
  error: PythonError | null;
  duration_ms: number;
  worker_id: string;
}
