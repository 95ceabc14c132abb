/**
 * The client side of JSON-RPC 2.0 over a newline-delimited byte stream: sends requests,
 * matches each response to its request by id, hands notifications to a listener, and fails
 * every pending request when the stream ends. It knows nothing about processes: the public
 * client (clients/typescript/client.ts), the tests' Supervisor (tests/helpers/) and the
 * supervisor's WorkerProcess run it over a child's pipes. No Deno API, so it runs under Node too.
 *
 * @module
 */

import { type Frame, readFrames } from "./framing.ts";
import {
  type JsonRpcId,
  notificationMessage,
  type Params,
  type ResponseMessage,
} from "./protocol.ts";

/** The stream ended or broke: no answer can come any more. */
export class ConnectionClosedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ConnectionClosedError";
  }
}

/** A line from the server that breaks the protocol: after it, nothing more is read. */
export type ProtocolViolation =
  /** Longer than `maxLineBytes`. */
  | { kind: "oversized"; bytes: number }
  /** Not JSON; `problem` is the parser's message. */
  | { kind: "not_json"; text: string; problem: string }
  /** JSON that `accept` refused. */
  | { kind: "refused"; text: string };

export interface RpcConnectionOptions {
  /** Longest line accepted from the server, in bytes (default 256 MiB). */
  maxLineBytes?: number;
  /**
   * Checks every value read before anything else sees it; a value refused is a protocol
   * violation. Without it every JSON value is taken (batches included).
   */
  accept?: (value: unknown) => boolean;
  /**
   * Every message read, as parsed, in the order of the lines, before it is dispatched:
   * responses, batches and notifications alike.
   */
  onMessage?: (value: unknown) => void;
  /** Every notification from the server. */
  onNotification?: (method: string, params: unknown) => void;
  /**
   * A protocol violation (nothing more is read after one): the error every pending request
   * then fails with, once it resolves (a process's owner may end the process and wait for its
   * exit). Without it they fail at once with a ConnectionClosedError.
   */
  onViolation?: (violation: ProtocolViolation) => Promise<Error> | Error;
  /**
   * Why the stream ended, asked once when it does (a process's exit code, say); `readError`
   * is what the stream broke with, if it broke rather than ended. Every pending request fails
   * with this error.
   */
  closeReason?: (readError?: unknown) => Promise<Error> | Error;
}

type Pending = { resolve: (response: ResponseMessage) => void; reject: (error: Error) => void };

/**
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { RpcConnection } from "./rpc_connection.ts";
 * const reply = new TextEncoder().encode('{"jsonrpc":"2.0","id":1,"result":"pong"}\n');
 * const connection = new RpcConnection(ReadableStream.from([reply]), async () => {});
 * assert.deepEqual(await connection.request("ping"), { jsonrpc: "2.0", id: 1, result: "pong" });
 * ```
 */
export class RpcConnection {
  /** Resolves when the stream has ended and every pending request has failed. */
  readonly closed: Promise<void>;
  #pending = new Map<JsonRpcId, Pending>();
  #nextId = 1;
  #failure: Error | undefined;

  constructor(
    input: AsyncIterable<Uint8Array>,
    private readonly write: (text: string) => Promise<void>,
    private readonly options: RpcConnectionOptions = {},
  ) {
    this.closed = this.#read(input);
  }

  /** Requests that have no answer yet. */
  get pendingCount(): number {
    return this.#pending.size;
  }

  /**
   * Sends a request and resolves with its whole response, error responses included. Rejects
   * with ConnectionClosedError if the stream ends first.
   */
  async request(method: string, params?: unknown, id?: JsonRpcId): Promise<ResponseMessage> {
    if (this.#failure) throw this.#failure;
    const requestId = id ?? this.#nextId++;
    if (this.#pending.has(requestId)) {
      throw new Error(`a request with id ${JSON.stringify(requestId)} is already pending`);
    }
    const response = new Promise<ResponseMessage>((resolve, reject) =>
      this.#pending.set(requestId, { resolve, reject })
    );
    // Handled below or by the caller; a failure during the write must not go unobserved.
    response.catch(() => {});
    const message: Record<string, unknown> = { jsonrpc: "2.0", id: requestId, method };
    if (params !== undefined) message.params = params;
    try {
      await this.write(JSON.stringify(message) + "\n");
    } catch (error) {
      this.#pending.delete(requestId);
      throw this.#failure ??
        new ConnectionClosedError(`cannot send ${method}: ${(error as Error).message}`);
    }
    return await response;
  }

  /** Sends a notification (no answer comes). */
  async notify(method: string, params?: unknown): Promise<void> {
    if (this.#failure) throw this.#failure;
    await this.write(JSON.stringify(notificationMessage(method, params as Params)) + "\n");
  }

  /** Fails every pending request with `error`, and every later one at once. */
  fail(error: Error): void {
    this.#failure ??= error;
    for (const { reject } of this.#pending.values()) reject(this.#failure);
    this.#pending.clear();
  }

  async #read(input: AsyncIterable<Uint8Array>): Promise<void> {
    /** The error pending requests fail with, once the violation's owner has it ready. */
    let failure: Promise<Error> | undefined;
    let readError: unknown;
    try {
      for await (const frame of readFrames(input, this.options.maxLineBytes ?? 256 << 20)) {
        const violation = this.#take(frame);
        if (violation === undefined) continue;
        // A broken line leaves no way to tell whose answer it was: nothing pending can be
        // trusted any more.
        const error = this.options.onViolation?.(violation) ??
          new ConnectionClosedError(`unreadable output from the server: ${describe(violation)}`);
        if (error instanceof Error) {
          this.fail(error);
          return;
        }
        failure = error;
        break;
      }
    } catch (error) {
      // The stream broke (the process went away): the same as its end, below.
      readError = error;
    }
    if (failure) {
      this.fail(await failure);
      return;
    }
    this.fail(
      await this.options.closeReason?.(readError) ??
        new ConnectionClosedError("the server closed its output"),
    );
  }

  /** Parses and dispatches one line; returns the violation if it breaks the protocol. */
  #take(frame: Frame): ProtocolViolation | undefined {
    if (frame.kind !== "line") return { kind: "oversized", bytes: frame.bytes };
    let value;
    try {
      value = JSON.parse(frame.text);
    } catch (error) {
      return { kind: "not_json", text: frame.text, problem: (error as Error).message };
    }
    if (this.options.accept && !this.options.accept(value)) {
      return { kind: "refused", text: frame.text };
    }
    this.#dispatch(value);
  }

  #dispatch(value: unknown): void {
    this.options.onMessage?.(value);
    for (const message of Array.isArray(value) ? value : [value]) {
      if (typeof message !== "object" || message === null) continue;
      if ("method" in message && !("id" in message)) {
        this.options.onNotification?.(String(message.method), message.params);
        continue;
      }
      const id = (message as ResponseMessage).id;
      const pending = this.#pending.get(id);
      if (!pending) continue;
      this.#pending.delete(id);
      pending.resolve(message as ResponseMessage);
    }
  }
}

/** A violation as the default error message words it. */
function describe(violation: ProtocolViolation): string {
  switch (violation.kind) {
    case "oversized":
      return `a line of ${violation.bytes} bytes`;
    case "not_json":
      return violation.problem;
    case "refused":
      return `an unexpected message: ${violation.text.slice(0, 80)}`;
  }
}
