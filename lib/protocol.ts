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
 * import assert from "node:assert/strict";
 * import { classifyMessage } from "./protocol.ts";
 * assert.equal(classifyMessage({ jsonrpc: "2.0", method: 1 }).kind, "invalid");
 * assert.equal(classifyMessage({ jsonrpc: "2.0", method: "ping", id: 1 }).kind, "request");
 * assert.equal(classifyMessage({ jsonrpc: "2.0", method: "ping" }).kind, "notification");
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

/** A notification line's object: a message that gets no answer. */
export function notificationMessage(method: string, params?: Params): NotificationMessage {
  return { jsonrpc: "2.0", method, params };
}

/** A file written under the request's working directory before the run. */
export interface InputFile {
  /** Relative path under the working directory: no `..`, not absolute. */
  path: string;
  content_b64: string;
}

/** The `execute` params. */
export interface ExecuteParams {
  code: string;
  /** Wall-clock limit for the Python code, in milliseconds. */
  timeout_ms?: number;
  /** What `input()` and `sys.stdin` read; EOF when absent. */
  stdin?: string;
  /** Server-held namespace pinned to one worker; created on first use. */
  session_id?: string;
  /**
   * Who the request runs for. With `--isolation tenant`, requests of one tenant may see each
   * other's changes; a session belongs to the tenant that created it.
   */
  tenant?: string;
  /** Client-held state (from `return_session`) to start from. */
  session_bytes?: string;
  /** Return the updated state as `session_bytes`. */
  return_session?: boolean;
  files?: InputFile[];
  /** Packages to load before the code runs. */
  packages?: string[];
  /** Send `output` notifications while the code runs. */
  stream?: boolean;
}

const EXECUTE_FIELDS = new Set([
  "code",
  "timeout_ms",
  "stdin",
  "session_id",
  "tenant",
  "session_bytes",
  "return_session",
  "files",
  "packages",
  "stream",
]);
// A plain character loop: a grouped pattern overflows the regex stack on a 20 MiB string.
const BASE64_CHARS = /^[A-Za-z0-9+/]*={0,2}$/;
const isBase64 = (text: string) => text.length % 4 === 0 && BASE64_CHARS.test(text);
const PACKAGE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;
/** Session ids and tenants: 1-128 printable ASCII characters. */
const NAME = /^[\x21-\x7e]{1,128}$/;

/** Whether `value` may be a session id or a tenant: 1-128 printable ASCII characters. */
export function isName(value: unknown): value is string {
  return typeof value === "string" && NAME.test(value);
}

/** Why a relative file path is unsafe, or undefined if it is safe. */
export function unsafePathReason(path: string): string | undefined {
  if (path === "") return "is empty";
  if (path.includes("\0")) return "contains a NUL character";
  if (path.startsWith("/") || /^[A-Za-z]:/.test(path)) return "must be relative";
  if (path.includes("\\")) return "must use / as separator";
  const parts = path.split("/");
  if (parts.some((p) => p === "..")) return "must not contain ..";
  if (parts.some((p) => p === "" || p === ".")) return "must not contain empty or . segments";
  return undefined;
}

function parseFiles(files: unknown): InputFile[] {
  if (!Array.isArray(files)) {
    throw invalidParams("files", "must be an array of {path, content_b64}");
  }
  return files.map((file, index) => {
    const field = `files[${index}]`;
    if (!isRecord(file)) throw invalidParams(field, "must be an object {path, content_b64}");
    const { path, content_b64 } = file;
    if (typeof path !== "string") throw invalidParams(`${field}.path`, "must be a string");
    const unsafe = unsafePathReason(path);
    if (unsafe) throw invalidParams(`${field}.path`, `${unsafe}: ${JSON.stringify(path)}`);
    if (typeof content_b64 !== "string" || !isBase64(content_b64)) {
      throw invalidParams(`${field}.content_b64`, "must be a base64 string");
    }
    for (const key of Object.keys(file)) {
      if (key !== "path" && key !== "content_b64") {
        throw invalidParams(`${field}.${key}`, "is not a known file field");
      }
    }
    return { path, content_b64 };
  });
}

/**
 * Validates `execute` params, rejecting unknown fields so that a typo is an error rather
 * than an option silently ignored.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseExecuteParams } from "./protocol.ts";
 * assert.equal(parseExecuteParams({ code: "1 + 1" }).code, "1 + 1");
 * assert.throws(() => parseExecuteParams({ code: "1", timeout: 5 }), /timeout is not a known/);
 * ```
 */
export function parseExecuteParams(params: unknown): ExecuteParams {
  if (!isRecord(params)) {
    throw invalidParams("params", 'must be an object such as {"code": "print(1)"}');
  }
  for (const key of Object.keys(params)) {
    if (!EXECUTE_FIELDS.has(key)) throw invalidParams(key, "is not a known execute parameter");
  }
  const {
    code,
    timeout_ms,
    stdin,
    session_id,
    tenant,
    session_bytes,
    return_session,
    packages,
    stream,
  } = params;
  if (typeof code !== "string") throw invalidParams("code", "must be a string of Python source");
  if (
    timeout_ms !== undefined &&
    (typeof timeout_ms !== "number" || !Number.isFinite(timeout_ms) || timeout_ms <= 0)
  ) throw invalidParams("timeout_ms", "must be a positive number of milliseconds");
  if (stdin !== undefined && typeof stdin !== "string") {
    throw invalidParams("stdin", "must be a string");
  }
  for (const [name, value] of [["session_id", session_id], ["tenant", tenant]]) {
    if (value !== undefined && (typeof value !== "string" || !NAME.test(value))) {
      throw invalidParams(name as string, "must be 1-128 printable ASCII characters");
    }
  }
  if (session_bytes !== undefined) {
    if (typeof session_bytes !== "string" || !isBase64(session_bytes)) {
      throw invalidParams("session_bytes", "must be a base64 string from return_session");
    }
    if (session_id !== undefined) {
      throw invalidParams("session_bytes", "cannot be combined with session_id");
    }
  }
  for (const [name, value] of [["return_session", return_session], ["stream", stream]]) {
    if (value !== undefined && typeof value !== "boolean") {
      throw invalidParams(name as string, "must be true or false");
    }
  }
  if (
    packages !== undefined &&
    (!Array.isArray(packages) ||
      !packages.every((p) => typeof p === "string" && PACKAGE_NAME.test(p)))
  ) throw invalidParams("packages", "must be an array of package names");
  return {
    code,
    timeout_ms,
    stdin,
    session_id: session_id as string | undefined,
    tenant: tenant as string | undefined,
    session_bytes,
    return_session: return_session as boolean | undefined,
    files: params.files === undefined ? undefined : parseFiles(params.files),
    packages: packages as string[] | undefined,
    stream: stream as boolean | undefined,
  };
}

/**
 * How a Python run ended. Python-level outcomes are results, not JSON-RPC errors. `exited`: the
 * code exited (`sys.exit`, `os._exit`, a fatal signal's default action), with `exit_code`;
 * `crashed`: the interpreter failed (a Wasm trap, `abort()`, a stack overflow), and the worker
 * put it back; `fs_limit`: a write past --max-fs-mb was refused (ENOSPC).
 */
export type ExecuteStatus =
  | "ok"
  | "error"
  | "timeout"
  | "output_limit"
  | "memory_limit"
  | "exited"
  | "crashed"
  | "fs_limit";

export interface PythonError {
  type: string;
  message: string;
  traceback: string;
}

/** A file created or changed under the working directory. */
export interface OutputFile {
  path: string;
  size: number;
  /** null when the file is larger than the cap; `truncated` is then true. */
  content_b64: string | null;
  truncated?: boolean;
}

export interface Figure {
  format: "png";
  data_b64: string;
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
  /** With `exited`: the status the code exited with. */
  exit_code?: number;
  files: OutputFile[];
  /** Changed files left out of `files`: their paths passed the bytes an answer returns. */
  files_omitted?: number;
  figures: Figure[];
  /** With `return_session`: the updated state, and the names that could not be kept. */
  session_bytes?: string;
  session_dropped?: string[];
  /** After a session moved to a new worker: the names that could not move with it. */
  session_moved?: { dropped: string[] };
  duration_ms: number;
  worker_id: string;
  /** The instance that ran it, when the pool serves a NATS service (--nats). */
  instance_id?: string;
}

// ---------------------------------------------------------------------------------------------
// The reports: the results of `health`, `stats` and `packages`, as the client receives them.
// ---------------------------------------------------------------------------------------------

/** Where a worker is in its life. `busy` covers a request, a preload, a health check, leaving. */
export type WorkerState = "starting" | "idle" | "busy" | "stopping" | "exited";

/**
 * What is put back between requests (`--isolation`): the memory image after every request, or
 * only between tenants, or the Python-level reset alone.
 */
export type Isolation = typeof ISOLATIONS[number];
export const ISOLATIONS = ["request", "tenant", "none"] as const;

/** What a busy worker is busy with: a request, or the pool's own work on it. */
export type WorkerActivity = "request" | "preload" | "health_check" | "renewing" | "leaving";

/** One worker in the `health` report. */
export interface WorkerHealth {
  id: string;
  pid: number;
  state: WorkerState;
  /** While `busy`: what with; null otherwise. */
  work: WorkerActivity | null;
  /** Takes no more work; it leaves once idle. */
  retiring: boolean;
  /** Requests it completed (health checks not counted). */
  served: number;
  /**
   * Requests after which its interpreter is renewed, or the worker recycled (the configured
   * limit, jittered).
   */
  request_limit: number;
  /** Times its interpreter was put back to its memory image at the request limit. */
  renewals: number;
  uptime_ms: number;
  /** From spawn to ready; null until it is ready. */
  startup_ms: number | null;
  // As the worker last reported them (when ready, and after each request); null before.
  heap_bytes: number | null;
  rss_bytes: number | null;
  fs_bytes: number | null;
  /** The server-held sessions it holds. */
  sessions: string[];
  /** Through a NATS gateway: the instance the worker belongs to (worker ids repeat across them). */
  instance_id?: string;
}

/** The `health` result: the pool and each worker, without asking the workers. */
export interface HealthReport {
  /** `ok`: at least the wanted workers are ready; `degraded`: fewer, but some. */
  status: "ok" | "degraded" | "unavailable" | "shutting_down";
  /** Workers idle or busy. */
  ready_workers: number;
  pool_size: number;
  min_workers: number;
  max_workers: number;
  use_pool: boolean;
  queue_depth: number;
  workers: WorkerHealth[];
  /** An instance of a NATS service (--nats): its id. */
  instance_id?: string;
  /** Through a NATS gateway (--gateway): one row per instance. */
  instances?: InstanceHealth[];
}

/** One instance of a NATS service, in a gateway's `health`. */
export interface InstanceHealth {
  instance_id: string;
  /** The instance's own status; `unreachable` when it did not answer in time. */
  status: HealthReport["status"] | "unreachable";
  ready_workers: number;
  pool_size: number;
  queue_depth: number;
  /** This gateway's requests running there now. */
  in_flight: number;
  /** Why it is unreachable. */
  error?: string;
}

/** A latency histogram's summary, in milliseconds. */
export interface LatencySummary {
  count: number;
  mean_ms: number;
  p50_ms: number;
  p90_ms: number;
  p99_ms: number;
  max_ms: number;
}

/** What a worker reports of itself when asked for its `stats`. */
export interface WorkerOwnStats {
  worker_id: string;
  requests: number;
  interpreter_restarts: number;
  heap_bytes: number;
  parked_bytes: number;
  fs_bytes: number;
  rss_bytes: number;
  uptime_ms: number;
}

/**
 * One worker in the `stats` report: its own figures when it is ready and answered in time,
 * `error` when it did not, neither while it starts or stops.
 */
export interface WorkerStats extends Partial<WorkerOwnStats> {
  id: string;
  state: WorkerState;
  served: number;
  error?: string;
  /** Through a NATS gateway: the instance the worker belongs to. */
  instance_id?: string;
}

/** The `stats` result: counters, latency percentiles and per-worker memory. */
export interface StatsReport {
  uptime_ms: number;
  /** Finished execute requests by outcome: a status, or an error name. */
  requests: Record<string, number>;
  requests_total: number;
  /** Worker replacements by reason. */
  restarts: Record<string, number>;
  /** Autoscaling steps: `up`, `down`. */
  scaling: Record<string, number>;
  queue_depth: number;
  busy_workers: number;
  idle_workers: number;
  /** Busy time over the time of every worker since the start, 0 to 1. */
  utilization: number;
  /** From arrival to the start of the run. */
  wait: LatencySummary;
  /** The run, as the supervisor sees it. */
  run: LatencySummary;
  isolation: Isolation;
  /** Resets by kind: `image` and `python` after requests, `renewal` at a request limit. */
  resets: Record<string, number>;
  /** Interpreters put back in place after they crashed or exited, by how they ended. */
  recoveries: Record<string, number>;
  reset: LatencySummary;
  park: LatencySummary;
  resume: LatencySummary;
  supervisor_rss_bytes: number;
  workers: WorkerStats[];
  /** An instance of a NATS service (--nats): its id. */
  instance_id?: string;
  /** Through a NATS gateway (--gateway): what the gateway itself counted. */
  gateway?: GatewayCounters;
  /** Through a NATS gateway: each instance's own `stats`, or why it did not answer. */
  instances?: (StatsReport | { instance_id: string; error: string })[];
}

/** A NATS gateway's own counters, in its `stats`. */
export interface GatewayCounters {
  /** Instances known now (their heartbeats are current). */
  instances: number;
  /** Answers that came for a request already answered (a lost instance's, a timed-out one's): dropped. */
  late_replies: number;
  /** Requests an instance refused before starting them (no room after all), sent on elsewhere. */
  declined: number;
  /** Dispatches that found no instance with a free worker (NATS "no responders"). */
  no_responders: number;
  /** Instances given up as dead while they ran requests of this gateway. */
  instances_lost: number;
  /** Requests queued in the gateway, waiting for a free worker on some instance. */
  queue_depth: number;
}

/** One package in the `packages` result. */
export interface PackageInfo {
  name: string;
  version: string;
  imports: string[];
  depends: string[];
  /** False when no package source is configured. */
  loadable: boolean;
}

/** The `packages` result: where packages come from, which are loaded pool-wide, which exist. */
export interface PackagesReport {
  source: "directory" | "index" | "none";
  /** The lock file workers load from (path or URL); null without a source. */
  lock_file: string | null;
  /** Loaded pool-wide, in load order: every worker gets these before it runs code. */
  loaded: string[];
  available: PackageInfo[];
}
