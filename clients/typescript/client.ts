/**
 * The TypeScript client of pyodide-pool, for Node and Deno alike: starts the supervisor (or
 * attaches to the streams of one started elsewhere) and calls its JSON-RPC methods with
 * typed params and results. Built on node:child_process, with no Deno API outside
 * `supervisorCommand`'s default, so the same module runs under both.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { PoolClient } from "./client.ts";
 * await using pool = await PoolClient.spawn({ args: ["--pool-size", "1", "--log-level", "warning"] });
 * assert.equal((await pool.execute("6 * 7")).result, "42");
 * ```
 *
 * @module
 */

import { type ChildProcess, spawn } from "node:child_process";
import process from "node:process";
import { finished, type Writable } from "node:stream";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { ErrorCode, type ErrorData, RpcError } from "../../lib/errors.ts";
import type {
  ExecuteParams,
  ExecuteResult,
  HealthReport,
  PackagesReport,
  StatsReport,
} from "../../lib/protocol.ts";
import { ConnectionClosedError, RpcConnection } from "../../lib/rpc_connection.ts";

export { ConnectionClosedError, ErrorCode, RpcError };
export type {
  ExecuteParams,
  ExecuteResult,
  ExecuteStatus,
  Figure,
  HealthReport,
  InputFile,
  LatencySummary,
  OutputFile,
  PackageInfo,
  PackagesReport,
  PythonError,
  StatsReport,
  WorkerHealth,
  WorkerStats,
} from "../../lib/protocol.ts";

/** -32000: the queue is full; retry later. */
export class OverloadedError extends RpcError {
  override name = "OverloadedError";
}
/** -32001: the worker died while running the request; it was not re-run. */
export class WorkerDiedError extends RpcError {
  override name = "WorkerDiedError";
}
/** -32002: the pool is shutting down. */
export class ShuttingDownError extends RpcError {
  override name = "ShuttingDownError";
}
/** -32003: cancelled (`signal` in ExecuteOptions). */
export class CancelledError extends RpcError {
  override name = "CancelledError";
}
/** -32004: the session does not exist, expired, or was lost with its worker. */
export class SessionNotFoundError extends RpcError {
  override name = "SessionNotFoundError";
}
/** -32005: the answer would pass --max-line-bytes; `data.largest_fields` names what took it. */
export class AnswerTooLargeError extends RpcError {
  override name = "AnswerTooLargeError";
}
/** -32602: a param is invalid; `data.field` names it. */
export class InvalidParamsError extends RpcError {
  override name = "InvalidParamsError";
}
/** -32601: no such method (or `shutdown` without --allow-shutdown). */
export class MethodNotFoundError extends RpcError {
  override name = "MethodNotFoundError";
}

const ERROR_CLASSES: Record<number, typeof RpcError> = {
  [ErrorCode.Overloaded]: OverloadedError,
  [ErrorCode.WorkerDied]: WorkerDiedError,
  [ErrorCode.ShuttingDown]: ShuttingDownError,
  [ErrorCode.Cancelled]: CancelledError,
  [ErrorCode.SessionNotFound]: SessionNotFoundError,
  [ErrorCode.AnswerTooLarge]: AnswerTooLargeError,
  [ErrorCode.InvalidParams]: InvalidParamsError,
  [ErrorCode.MethodNotFound]: MethodNotFoundError,
};

/** An error response as the error class for its code (RpcError for the others). */
export function rpcErrorFrom(error: { code: number; message: string; data?: unknown }): RpcError {
  const ErrorClass = ERROR_CLASSES[error.code] ?? RpcError;
  const data = typeof error.data === "object" && error.data !== null ? error.data : {};
  return new ErrorClass(error.code, error.message, data as ErrorData);
}

/** `execute` params besides the code, plus what only a client can offer. */
export interface ExecuteOptions extends Omit<ExecuteParams, "code" | "stream"> {
  /** Called with output as the code prints it (turns on `stream`). */
  onOutput?: (stream: "stdout" | "stderr", text: string) => void;
  /** Cancels the request: a queued one never runs, a running one is interrupted. */
  signal?: AbortSignal;
}

export interface SpawnOptions {
  /** The supervisor's command line (default: `supervisorCommand()`). */
  command?: string[];
  /** Options appended to the command, such as `["--pool-size", "2"]`. */
  args?: string[];
  /** Variables added to this process's environment for the supervisor. */
  env?: Record<string, string>;
  cwd?: string;
  /** Where the supervisor's logs go (default: this process's stderr). */
  stderr?: "inherit" | "ignore";
  /** Resolve only once this many workers are ready (default 0: requests queue meanwhile). */
  waitForWorkers?: number;
  /** Longest line accepted from the supervisor, in bytes (default 256 MiB). */
  maxLineBytes?: number;
}

export interface AttachOptions {
  /** The supervisor's stdout: a Node Readable or a web ReadableStream. */
  input: AsyncIterable<Uint8Array>;
  /** The supervisor's stdin: a Node Writable or a web WritableStream. */
  output: Writable | WritableStream<Uint8Array>;
  maxLineBytes?: number;
}

/**
 * The supervisor's command line: `deno task start` from deno.json, the one place that writes
 * it (its permission set, its V8 flags), made to run from any directory, for the running Deno
 * or else `deno` on the PATH.
 */
export function supervisorCommand(args: string[] = []): [string, string[]] {
  const deno = (globalThis as { Deno?: { execPath(): string } }).Deno?.execPath() ?? "deno";
  const path = (relative: string) => fileURLToPath(new URL(relative, import.meta.url));
  const config = path("../../deno.json");
  const task: string = JSON.parse(readFileSync(config, "utf8")).tasks.start;
  const [program, subcommand, ...rest] = task.split(/\s+/);
  const script = rest.pop();
  if (program !== "deno" || subcommand !== "run" || !script?.endsWith(".ts")) {
    throw new Error(`${config}: tasks.start is not "deno run ... <script>.ts": ${task}`);
  }
  return [deno, ["run", "--config", config, ...rest, path(`../../${script}`), ...args]];
}

/**
 * Polls `health` until the pool has `count` ready workers; throws with the last report past
 * `timeoutMs`.
 */
export async function waitForWorkers(
  health: () => Promise<{ ready_workers: number }>,
  count: number,
  timeoutMs = 120_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (count > 0) {
    const report = await health();
    if (report.ready_workers >= count) return;
    if (Date.now() > deadline) {
      throw new Error(`the pool did not get ${count} ready workers: ${JSON.stringify(report)}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/**
 * One supervisor and the requests sent to it. Safe to use from many async tasks at once:
 * responses are matched to requests by id.
 */
export class PoolClient {
  readonly #connection: RpcConnection;
  readonly #child: ChildProcess | undefined;
  readonly #exited: Promise<Exit>;
  readonly #closeOutput: () => Promise<void>;
  #outputListeners = new Map<unknown, NonNullable<ExecuteOptions["onOutput"]>>();
  #nextId = 1;

  private constructor(
    input: AsyncIterable<Uint8Array>,
    write: (text: string) => Promise<void>,
    closeOutput: () => Promise<void>,
    maxLineBytes: number | undefined,
    child?: ChildProcess,
  ) {
    this.#child = child;
    this.#closeOutput = closeOutput;
    this.#exited = child ? exitOf(child) : Promise.resolve({ code: null, signal: null });
    this.#connection = new RpcConnection(input, write, {
      maxLineBytes,
      onNotification: (method, params) => {
        if (method !== "output") return;
        const { id, stream, text } = params as { id: unknown; stream: "stdout"; text: string };
        this.#outputListeners.get(id)?.(stream, text);
      },
      closeReason: () => child ? this.#exitReason() : new ConnectionClosedError("stream ended"),
    });
  }

  /** Starts a supervisor and connects to it. */
  static async spawn(options: SpawnOptions = {}): Promise<PoolClient> {
    const [executable, ...commandArgs] = options.command ?? supervisorCommand().flat();
    const child = spawn(executable, [...commandArgs, ...(options.args ?? [])], {
      cwd: options.cwd,
      env: { ...process.env, ...options.env },
      stdio: ["pipe", "pipe", options.stderr ?? "inherit"],
    });
    const stdin = child.stdin!;
    // Without a listener, a write to a dead supervisor (EPIPE) would crash this process.
    stdin.on("error", () => {});
    const pool = new PoolClient(
      bytesOf(child.stdout!),
      (text) => writeTo(stdin, text),
      () => endOf(stdin),
      options.maxLineBytes,
      child,
    );
    try {
      await waitForWorkers(() => pool.health(), options.waitForWorkers ?? 0);
    } catch (error) {
      await pool.close();
      throw error;
    }
    return pool;
  }

  /** Connects to a supervisor started elsewhere, through its stdout and stdin. */
  static attach(options: AttachOptions): PoolClient {
    const { output } = options;
    if (output instanceof WritableStream) {
      const writer = output.getWriter();
      const encoder = new TextEncoder();
      return new PoolClient(
        options.input,
        (text) => writer.write(encoder.encode(text)),
        () => writer.close(),
        options.maxLineBytes,
      );
    }
    output.on("error", () => {});
    return new PoolClient(
      bytesOf(options.input),
      (text) => writeTo(output, text),
      () => endOf(output),
      options.maxLineBytes,
    );
  }

  /** The supervisor's process id, when this client started it. */
  get pid(): number | undefined {
    return this.#child?.pid;
  }

  /** Calls any method; resolves with its result or rejects with an RpcError subclass. */
  async call<T = unknown>(method: string, params?: unknown): Promise<T> {
    return this.#result<T>(await this.#connection.request(method, params));
  }

  /** Runs Python code. Python's own failures are results (`status`), not errors. */
  async execute(code: string, options: ExecuteOptions = {}): Promise<ExecuteResult> {
    const { onOutput, signal, ...params } = options;
    signal?.throwIfAborted();
    const id = `c${this.#nextId++}`;
    if (onOutput) this.#outputListeners.set(id, onOutput);
    const cancel = () => this.#connection.notify("$/cancelRequest", { id }).catch(() => {});
    signal?.addEventListener("abort", cancel, { once: true });
    try {
      const request = { ...params, code, ...(onOutput ? { stream: true } : {}) };
      return this.#result<ExecuteResult>(await this.#connection.request("execute", request, id));
    } finally {
      this.#outputListeners.delete(id);
      signal?.removeEventListener("abort", cancel);
    }
  }

  /** Pool and per-worker state. */
  health(): Promise<HealthReport> {
    return this.call<HealthReport>("health");
  }

  /** Counters, queue depth, latency percentiles and memory per worker. */
  stats(): Promise<StatsReport> {
    return this.call<StatsReport>("stats");
  }

  /** The packages that can be loaded, and those loaded pool-wide. */
  packages(): Promise<PackagesReport> {
    return this.call<PackagesReport>("packages");
  }

  /** Asks the pool to stop (needs --allow-shutdown); it answers what it has, then exits. */
  shutdown(): Promise<{ stopping: true }> {
    return this.call<{ stopping: true }>("shutdown");
  }

  /** Sends a signal to the supervisor (when this client started it). */
  kill(signal: Parameters<ChildProcess["kill"]>[0] = "SIGTERM"): void {
    this.#child?.kill(signal);
  }

  /**
   * Closes the supervisor's stdin: it answers every request it has received, then exits.
   * Resolves with its exit code (null if a signal ended it, or when attached). Past
   * `timeoutMs` the supervisor is killed.
   */
  async close({ timeoutMs = 60_000 } = {}): Promise<number | null> {
    await this.#closeOutput().catch(() => {});
    if (this.#child) {
      const timer = setTimeout(() => this.kill("SIGKILL"), timeoutMs);
      try {
        await this.#exited;
      } finally {
        clearTimeout(timer);
      }
    }
    await this.#connection.closed;
    return (await this.#exited).code;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #result<T>(response: { result?: unknown; error?: { code: number; message: string } }): T {
    if (response.error) throw rpcErrorFrom(response.error);
    return response.result as T;
  }

  async #exitReason(): Promise<Error> {
    // stdout can end a moment before the exit is reported.
    let timer: ReturnType<typeof setTimeout> | undefined;
    const exited = await Promise.race([
      this.#exited.then(() => true),
      new Promise<false>((resolve) => timer = setTimeout(() => resolve(false), 1000)),
    ]);
    clearTimeout(timer);
    if (!exited) return new ConnectionClosedError("the supervisor closed its stdout");
    const { code, signal, error } = await this.#exited;
    return new ConnectionClosedError(
      error
        ? `cannot start the supervisor: ${error.message}`
        : `the supervisor exited (code ${code}, signal ${signal})`,
    );
  }
}

/** How the supervisor ended; `error` when it could not start at all (command not found). */
interface Exit {
  code: number | null;
  signal: string | null;
  error?: Error;
}

function exitOf(child: ChildProcess): Promise<Exit> {
  return new Promise((resolve) => {
    child.once("exit", (code, signal) => resolve({ code, signal }));
    // Also the listener that keeps a failed start from crashing this process.
    child.once("error", (error) => resolve({ code: null, signal: null, error }));
  });
}

/** A Node Readable's Buffers as plain Uint8Arrays (framing copies with slice(), a view on Buffer). */
async function* bytesOf(readable: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
  for await (const chunk of readable) {
    yield chunk.constructor === Uint8Array
      ? chunk
      : new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  }
}

/** Ends a Node stream; resolves once it finished, or failed (the reader is gone: also done). */
function endOf(stream: Writable): Promise<void> {
  return new Promise((resolve) => {
    finished(stream, () => resolve());
    stream.end();
  });
}

function writeTo(stream: Writable, text: string): Promise<void> {
  return new Promise((resolve, reject) =>
    stream.write(text, (error) => error ? reject(error) : resolve())
  );
}
