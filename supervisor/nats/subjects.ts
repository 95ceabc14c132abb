/**
 * The NATS contract between a gateway (gateway.ts) and the instances of a service
 * (instance.ts): the subjects, the messages on them and their validation. Everything read from
 * NATS passes through a parser here once; code past it trusts the typed values.
 *
 * Subjects of the service `S` (--nats-service, default `pyodide_pool`):
 *
 * | subject                   | kind                  | what                                                |
 * | ------------------------- | --------------------- | --------------------------------------------------- |
 * | `S.execute`               | queue group `S`       | a new request; one subscription per free worker     |
 * | `S.packages`              | queue group `S`       | the `packages` report of any instance               |
 * | `S.heartbeat`             | publish               | each instance, every second and as workers free up  |
 * | `S.discover`              | publish               | a gateway asks every instance for a heartbeat now   |
 * | `S.lookup`                | request, all answer   | who has these requests? (an offer unacknowledged)   |
 * | `S.sessions`              | request, all answer   | who holds this session? (one new to a gateway)      |
 * | `S.instance.ID.execute`   | request               | a request of a session that instance ID holds       |
 * | `S.instance.ID.cancel`    | publish               | `$/cancelRequest` for a request running on ID       |
 * | `S.instance.ID.ping`      | request               | liveness, while ID runs a gateway's requests        |
 * | `S.instance.ID.health`    | request               | ID's `health` report                                |
 * | `S.instance.ID.stats`     | request               | ID's `stats` report                                 |
 * | `S.instance.ID.resend`    | request               | answers lost while NATS was away, sent again        |
 *
 * An `execute` request carries a reply subject; the instance sends on it, in order: `accepted`
 * (or `declined`, before anything ran), `output` notifications of a streaming request, then
 * one `result` or `error`. A message longer than the server's max_payload is sent in chunks
 * (the `Pyodide-Chunk` header, wire.ts).
 *
 * @module
 */

import { ErrorCode, RpcError } from "../../lib/errors.ts";
import type { ExecuteResult, JsonRpcId } from "../../lib/protocol.ts";

/** The version of this contract; instances and gateways of one service must agree on it. */
export const NATS_PROTOCOL = 1;

/** How often an instance says it is there, and what it can take. */
export const HEARTBEAT_MS = 1000;

/** The subjects of one service. */
export interface ServiceSubjects {
  readonly service: string;
  /** The queue group every instance's subscriptions on the shared subjects join. */
  readonly queue: string;
  readonly execute: string;
  readonly packages: string;
  readonly heartbeat: string;
  readonly discover: string;
  readonly lookup: string;
  readonly sessions: string;
  /** The subjects of one instance. */
  instance(id: string): InstanceSubjects;
}

export interface InstanceSubjects {
  readonly execute: string;
  readonly cancel: string;
  readonly ping: string;
  readonly health: string;
  readonly stats: string;
  readonly resend: string;
}

/**
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { serviceSubjects } from "./subjects.ts";
 * const s = serviceSubjects("pyodide_pool");
 * assert.equal(s.execute, "pyodide_pool.execute");
 * assert.equal(s.instance("abc").cancel, "pyodide_pool.instance.abc.cancel");
 * ```
 */
export function serviceSubjects(service: string): ServiceSubjects {
  return {
    service,
    queue: service,
    execute: `${service}.execute`,
    packages: `${service}.packages`,
    heartbeat: `${service}.heartbeat`,
    discover: `${service}.discover`,
    lookup: `${service}.lookup`,
    sessions: `${service}.sessions`,
    instance: (id) => {
      const prefix = `${service}.instance.${id}`;
      return {
        execute: `${prefix}.execute`,
        cancel: `${prefix}.cancel`,
        ping: `${prefix}.ping`,
        health: `${prefix}.health`,
        stats: `${prefix}.stats`,
        resend: `${prefix}.resend`,
      };
    },
  };
}

/** Instance ids and request ids: one subject token's worth of safe characters. */
const TOKEN = /^[A-Za-z0-9_-]{1,64}$/;

// ---------------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------------

/** A gateway's `execute` request. `params` are checked by the instance as a client's are. */
export interface ExecuteRequest {
  /** Unique across gateways: it names the request in `cancel` and `resend`. */
  request_id: string;
  /** The client's own id at the gateway, for the instance's logs only. */
  client_id: JsonRpcId;
  params: unknown;
  /**
   * Sent to the instance's own subject in place of the queue group (while some instance may be
   * stalled): decline it unless a worker is idle, as on the queue group.
   */
  needs_idle_worker?: boolean;
}

/** What an instance sends on an `execute` request's reply subject. */
export type Reply =
  /** The instance took the request: it runs there, and nowhere else. */
  | { kind: "accepted"; instance_id: string }
  /** The instance did not take it, and nothing ran: the gateway may send it elsewhere. */
  | { kind: "declined"; instance_id: string; reason: string }
  /** A streaming request's output, in order (`seq` from 0). */
  | { kind: "output"; seq: number; stream: "stdout" | "stderr"; text: string }
  | { kind: "result"; result: ExecuteResult }
  | { kind: "error"; error: { code: number; message: string; data: Record<string, unknown> } };

/** An instance's heartbeat: that it is there, and how many requests it could start now. */
export interface Heartbeat {
  instance_id: string;
  protocol: number;
  /** `leaving`: it takes no new requests, and its sessions end with it. */
  state: "serving" | "leaving";
  free_slots: number;
  ready_workers: number;
  queue_depth: number;
}

/** `cancel` on an instance's subject. */
export interface CancelRequest {
  request_id: string;
}

/**
 * `resend`: the requests a gateway still waits for, after NATS was away. `lookup`: requests
 * it offered that no instance acknowledged; an instance that does not know one refuses it from
 * then on, so that the gateway may offer it again.
 */
export interface ResendRequest {
  request_ids: string[];
}

/**
 * The answer to `resend` and `lookup`: the finished ones are sent again on their reply
 * subjects; `instance_id` says who answers.
 */
export interface ResendReply {
  instance_id: string;
  finished: string[];
  running: string[];
  unknown: string[];
}

/**
 * `sessions`: a gateway that does not know a session (another gateway created it, or it
 * restarted) asks who holds it before sending its request anywhere.
 */
export interface SessionQuery {
  session_id: string;
}

/** The answer to `sessions`: whether this instance knows the session. */
export interface SessionHolder {
  instance_id: string;
  held: boolean;
}

/** `ping`'s answer. */
export interface Pong {
  instance_id: string;
}

const decoder = new TextDecoder();
const encoder = new TextEncoder();

/** A message's body as JSON bytes. */
export function encode(value: unknown): Uint8Array {
  return encoder.encode(JSON.stringify(value));
}

/** Thrown for a message that breaks the contract: what is wrong, for the log or the answer. */
export class ContractError extends Error {
  constructor(what: string, problem: string) {
    super(`${what}: ${problem}`);
    this.name = "ContractError";
  }
}

function decodeRecord(data: Uint8Array, what: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(decoder.decode(data));
  } catch (error) {
    throw new ContractError(what, `not JSON (${(error as Error).message})`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new ContractError(what, "not a JSON object");
  }
  return value as Record<string, unknown>;
}

function token(value: unknown, what: string, field: string): string {
  if (typeof value !== "string" || !TOKEN.test(value)) {
    throw new ContractError(what, `${field} must be 1-64 letters, digits, _ or -`);
  }
  return value;
}

function isId(value: unknown): value is JsonRpcId {
  return value === null || typeof value === "string" ||
    (typeof value === "number" && Number.isFinite(value));
}

/**
 * An `execute` request, as an instance reads it.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { encode, parseExecuteRequest } from "./subjects.ts";
 * const request = parseExecuteRequest(encode({ request_id: "g1-1", client_id: 7, params: { code: "1" } }));
 * assert.equal(request.request_id, "g1-1");
 * assert.throws(() => parseExecuteRequest(encode({ request_id: "a b", params: {} })), /request_id/);
 * ```
 */
export function parseExecuteRequest(data: Uint8Array): ExecuteRequest {
  const what = "execute request";
  const value = decodeRecord(data, what);
  const clientId = value.client_id ?? null;
  if (!isId(clientId)) throw new ContractError(what, "client_id must be a JSON-RPC id");
  return {
    request_id: token(value.request_id, what, "request_id"),
    client_id: clientId,
    params: value.params,
    needs_idle_worker: value.needs_idle_worker === true,
  };
}

/** The RpcError an instance answers a request that breaks the contract with. */
export function contractRpcError(error: ContractError): RpcError {
  return new RpcError(ErrorCode.InvalidRequest, `Invalid Request: ${error.message}`, {
    problem: error.message,
  });
}

/**
 * A reply on an `execute` request's reply subject, as a gateway reads it.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { encode, parseReply } from "./subjects.ts";
 * assert.deepEqual(parseReply(encode({ kind: "accepted", instance_id: "i1" })), {
 *   kind: "accepted",
 *   instance_id: "i1",
 * });
 * assert.throws(() => parseReply(encode({ kind: "maybe" })), /kind/);
 * ```
 */
export function parseReply(data: Uint8Array): Reply {
  const what = "execute reply";
  const value = decodeRecord(data, what);
  switch (value.kind) {
    case "accepted":
      return { kind: "accepted", instance_id: token(value.instance_id, what, "instance_id") };
    case "declined":
      return {
        kind: "declined",
        instance_id: token(value.instance_id, what, "instance_id"),
        reason: String(value.reason ?? ""),
      };
    case "output": {
      const { seq, stream, text } = value;
      if (typeof seq !== "number" || !Number.isInteger(seq) || seq < 0) {
        throw new ContractError(what, "output seq must be a whole number");
      }
      if (stream !== "stdout" && stream !== "stderr") {
        throw new ContractError(what, "output stream must be stdout or stderr");
      }
      if (typeof text !== "string") throw new ContractError(what, "output text must be a string");
      return { kind: "output", seq, stream, text };
    }
    case "result": {
      const result = value.result as Record<string, unknown> | null;
      if (
        typeof result !== "object" || result === null || typeof result.status !== "string" ||
        typeof result.worker_id !== "string"
      ) throw new ContractError(what, "result must be an execute result");
      return { kind: "result", result: result as unknown as ExecuteResult };
    }
    case "error": {
      const error = value.error as Record<string, unknown> | null;
      if (
        typeof error !== "object" || error === null || typeof error.code !== "number" ||
        typeof error.message !== "string"
      ) throw new ContractError(what, "error must be a JSON-RPC error");
      const data =
        typeof error.data === "object" && error.data !== null && !Array.isArray(error.data)
          ? error.data as Record<string, unknown>
          : {};
      return { kind: "error", error: { code: error.code, message: error.message, data } };
    }
    default:
      throw new ContractError(what, `unknown kind ${JSON.stringify(value.kind)}`);
  }
}

/**
 * A heartbeat, as a gateway reads it.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { encode, parseHeartbeat } from "./subjects.ts";
 * const beat = parseHeartbeat(encode({
 *   instance_id: "i1", protocol: 1, state: "serving", free_slots: 2, ready_workers: 2, queue_depth: 0,
 * }));
 * assert.equal(beat.free_slots, 2);
 * ```
 */
export function parseHeartbeat(data: Uint8Array): Heartbeat {
  const what = "heartbeat";
  const value = decodeRecord(data, what);
  const count = (field: string): number => {
    const n = value[field];
    if (typeof n !== "number" || !Number.isInteger(n) || n < 0) {
      throw new ContractError(what, `${field} must be a whole number`);
    }
    return n;
  };
  if (value.state !== "serving" && value.state !== "leaving") {
    throw new ContractError(what, "state must be serving or leaving");
  }
  return {
    instance_id: token(value.instance_id, what, "instance_id"),
    protocol: count("protocol"),
    state: value.state,
    free_slots: count("free_slots"),
    ready_workers: count("ready_workers"),
    queue_depth: count("queue_depth"),
  };
}

/** A `cancel` message, as an instance reads it. */
export function parseCancel(data: Uint8Array): CancelRequest {
  const what = "cancel";
  return { request_id: token(decodeRecord(data, what).request_id, what, "request_id") };
}

/** A `resend` request, as an instance reads it. */
export function parseResendRequest(data: Uint8Array): ResendRequest {
  const what = "resend request";
  const ids = decodeRecord(data, what).request_ids;
  if (!Array.isArray(ids) || ids.length > 10_000) {
    throw new ContractError(what, "request_ids must be a list of up to 10,000 ids");
  }
  return { request_ids: ids.map((id) => token(id, what, "request_ids[]")) };
}

/** The answer to `resend`, as a gateway reads it. */
export function parseResendReply(data: Uint8Array): ResendReply {
  const what = "resend reply";
  const value = decodeRecord(data, what);
  const list = (field: string) => {
    const ids = value[field];
    if (!Array.isArray(ids)) throw new ContractError(what, `${field} must be a list`);
    return ids.map((id) => token(id, what, `${field}[]`));
  };
  return {
    instance_id: token(value.instance_id, what, "instance_id"),
    finished: list("finished"),
    running: list("running"),
    unknown: list("unknown"),
  };
}

/** A `sessions` query, as an instance reads it (a session id is what a client may send). */
export function parseSessionQuery(data: Uint8Array): SessionQuery {
  const what = "sessions query";
  const id = decodeRecord(data, what).session_id;
  if (typeof id !== "string" || id.length === 0 || id.length > 128) {
    throw new ContractError(what, "session_id must be a string of 1-128 characters");
  }
  return { session_id: id };
}

/**
 * The answer to `sessions`, as a gateway reads it.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { encode, parseSessionHolder } from "./subjects.ts";
 * assert.deepEqual(parseSessionHolder(encode({ instance_id: "i1", held: true })), {
 *   instance_id: "i1",
 *   held: true,
 * });
 * ```
 */
export function parseSessionHolder(data: Uint8Array): SessionHolder {
  const what = "sessions answer";
  const value = decodeRecord(data, what);
  return { instance_id: token(value.instance_id, what, "instance_id"), held: value.held === true };
}

/** `ping`'s answer, as a gateway reads it. */
export function parsePong(data: Uint8Array): Pong {
  const what = "pong";
  return { instance_id: token(decodeRecord(data, what).instance_id, what, "instance_id") };
}

/** A report (health, stats, packages) from an instance: a JSON object, checked as such. */
export function parseReport<T>(data: Uint8Array, what: string): T {
  const value = decodeRecord(data, what);
  if ("error" in value && typeof value.error === "object" && value.error !== null) {
    const error = value.error as { code?: unknown; message?: unknown; data?: unknown };
    throw new RpcError(
      typeof error.code === "number" ? error.code : ErrorCode.InternalError,
      String(error.message ?? "the instance failed"),
      typeof error.data === "object" && error.data !== null
        ? error.data as Record<string, unknown>
        : {},
    );
  }
  return value as T;
}
