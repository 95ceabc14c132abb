/**
 * The client side of JSON-RPC 2.0 over a newline-delimited byte stream: sends requests,
 * matches each response to its request by id, hands notifications to a listener, and fails
 * every pending request when the stream ends. It knows nothing about processes: clients/typescript/client.ts
 * and the tests' Supervisor (lib/pool_client.ts) run it over a child's pipes. No Deno API, so
 * it runs under Node too.
 *
 * @module
 */

import { readFrames } from "./framing.ts";
import type { JsonRpcId, ResponseMessage } from "./protocol.ts";

/** The stream ended or broke: no answer can come any more. */
export class ConnectionClosedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ConnectionClosedError";
  }
}

export interface RpcConnectionOptions {
  /** Longest line accepted from the server, in bytes (default 256 MiB). */
  maxLineBytes?: number;
  /** Every message read, as parsed: responses, batches and notifications alike. */
  onMessage?: (value: unknown) => void;
  /** Every notification from the server. */
  onNotification?: (method: string, params: unknown) => void;
  /**
   * Why the stream ended, asked once when it does (a process's exit code, say). Every
   * pending request fails with this error.
   */
  closeReason?: () => Promise<Error> | Error;
}

type Pending = { resolve: (response: ResponseMessage) => void; reject: (error: Error) => void };

/**
 * @example
 * ```ts
 * import { RpcConnection } from "./rpc_connection.ts";
 * const reply = new TextEncoder().encode('{"jsonrpc":"2.0","id":1,"result":"pong"}\n');
 * const connection = new RpcConnection(ReadableStream.from([reply]), async () => {});
 * console.assert((await connection.request("ping")).result === "pong");
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
    const message: Record<string, unknown> = { jsonrpc: "2.0", method };
    if (params !== undefined) message.params = params;
    await this.write(JSON.stringify(message) + "\n");
  }

  /** Fails every pending request with `error`, and every later one at once. */
  fail(error: Error): void {
    this.#failure ??= error;
    for (const { reject } of this.#pending.values()) reject(this.#failure);
    this.#pending.clear();
  }

  async #read(input: AsyncIterable<Uint8Array>): Promise<void> {
    try {
      for await (const frame of readFrames(input, this.options.maxLineBytes ?? 256 << 20)) {
        let value;
        try {
          if (frame.kind !== "line") throw new Error(`a line of ${frame.bytes} bytes`);
          value = JSON.parse(frame.text);
        } catch (error) {
          // A broken line leaves no way to tell whose answer it was: nothing pending can be
          // trusted any more.
          this.fail(
            new ConnectionClosedError(
              `unreadable output from the server: ${(error as Error).message}`,
            ),
          );
          return;
        }
        this.#dispatch(value);
      }
    } catch {
      // The stream broke (the process went away): the same as its end, below.
    }
    this.fail(
      await this.options.closeReason?.() ??
        new ConnectionClosedError("the server closed its output"),
    );
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
