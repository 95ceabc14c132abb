/**
 * The test and benchmark client: starts the supervisor as a Deno child process and talks
 * JSON-RPC to it, with what tests need besides calls (raw lines, every line received, the
 * stderr text, the process itself). Requests go through the same RpcConnection as the
 * public client, clients/typescript/client.ts.
 *
 * @module
 */

import { supervisorCommand, waitForWorkers } from "../../clients/typescript/client.ts";
import type { ExecuteResult, HealthReport, StatsReport } from "../../lib/protocol.ts";
import { RpcConnection } from "../../lib/rpc_connection.ts";

export { supervisorCommand };

export interface Response {
  jsonrpc: "2.0";
  id: string | number | null;
  result?: unknown;
  error?: { code: number; message: string; data?: Record<string, unknown> };
}

export interface StartOptions {
  args?: string[];
  env?: Record<string, string>;
  /** Wait until this many workers are ready (default: the pool size, or 0 without a pool). */
  waitForWorkers?: number;
  /** Longest line accepted from the supervisor (default 64 MiB). */
  maxLineBytes?: number;
}

/**
 * @example
 * ```ts ignore
 * import { Supervisor } from "./supervisor_process.ts";
 * const pool = await Supervisor.start({ args: ["--pool-size", "1"] });
 * console.log((await pool.execute({ code: "1 + 1" })).result); // "2"
 * await pool.close();
 * ```
 */
export class Supervisor {
  readonly process: Deno.ChildProcess;
  /** Every line read from stdout, parsed (responses, batches, notifications). */
  readonly received: unknown[] = [];
  stderr = "";
  #writer: WritableStreamDefaultWriter<Uint8Array>;
  #connection: RpcConnection;
  #lineWaiters: Array<() => void> = [];
  #nextId = 1;
  #encoder = new TextEncoder();
  /** Resolves when stdout has ended; requests still pending have then failed. */
  readonly stdoutClosed: Promise<void>;

  private constructor(args: string[], env: Record<string, string>, maxLineBytes: number) {
    const [executable, commandArgs] = supervisorCommand(args);
    this.process = new Deno.Command(executable, {
      args: commandArgs,
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
      env: { PYODIDE_LOG_LEVEL: "warning", ...env },
    }).spawn();
    this.#writer = this.process.stdin.getWriter();
    this.#connection = new RpcConnection(this.process.stdout, (text) => this.sendRaw(text), {
      maxLineBytes,
      onMessage: (value) => {
        this.received.push(value);
        for (const wake of this.#lineWaiters.splice(0)) wake();
      },
    });
    this.stdoutClosed = this.#connection.closed;
    this.#readStderr();
  }

  static async start(options: StartOptions = {}): Promise<Supervisor> {
    const supervisor = new Supervisor(
      options.args ?? [],
      options.env ?? {},
      options.maxLineBytes ?? 64 << 20,
    );
    await waitForWorkers(
      () => supervisor.call("health") as Promise<{ ready_workers: number }>,
      options.waitForWorkers ?? poolSizeOf(options.args ?? []),
    );
    return supervisor;
  }

  /** Writes a raw line (or anything) to the supervisor's stdin. */
  async sendRaw(text: string): Promise<void> {
    await this.#writer.write(this.#encoder.encode(text));
  }

  /** Sends `$/cancelRequest` for the request with this id. */
  async cancel(id: string | number): Promise<void> {
    await this.#connection.notify("$/cancelRequest", { id });
  }

  /** Sends a request and returns its whole response; rejects if the supervisor goes first. */
  async request(method: string, params?: unknown, id?: string | number): Promise<Response> {
    const requestId = id ?? `t${this.#nextId++}`;
    return await this.#connection.request(method, params, requestId) as Response;
  }

  /** Sends a request and returns its result, throwing on a JSON-RPC error. */
  async call(method: string, params?: unknown): Promise<unknown> {
    const response = await this.request(method, params);
    if (response.error) throw new Error(`${method} failed: ${JSON.stringify(response.error)}`);
    return response.result;
  }

  /** The pool's `health` report. */
  health(): Promise<HealthReport> {
    return this.call("health") as Promise<HealthReport>;
  }

  /** The pool's `stats` report. */
  stats(): Promise<StatsReport> {
    return this.call("stats") as Promise<StatsReport>;
  }

  execute(params: Record<string, unknown>): Promise<ExecuteResult> {
    return this.call("execute", params) as Promise<ExecuteResult>;
  }

  /** Waits until `count` lines in all have been received; returns them. */
  async waitForLines(count: number, timeoutMs = 30_000): Promise<unknown[]> {
    const deadline = Date.now() + timeoutMs;
    while (this.received.length < count) {
      if (Date.now() > deadline) {
        throw new Error(`expected ${count} lines, got ${JSON.stringify(this.received)}`);
      }
      await new Promise<void>((resolve) => {
        this.#lineWaiters.push(resolve);
        setTimeout(resolve, 100);
      });
    }
    return this.received.slice(0, count);
  }

  /** The pids of the current workers, from `health`. */
  async workerPids(): Promise<number[]> {
    const health = await this.call("health") as { workers: { pid: number }[] };
    return health.workers.map((w) => w.pid);
  }

  /** Closes stdin, and does not wait. */
  async closeInput(): Promise<void> {
    await this.#writer.close().catch(() => {});
  }

  /** Closes stdin and waits for the exit. */
  async close(): Promise<Deno.CommandStatus> {
    await this.#writer.close().catch(() => {});
    const status = await this.process.status;
    await this.stdoutClosed;
    return status;
  }

  async #readStderr(): Promise<void> {
    const decoder = new TextDecoder();
    for await (const chunk of this.process.stderr) this.stderr += decoder.decode(chunk);
  }
}

/** The workers a pool started with `args` has once ready: --min-workers, else --pool-size. */
function poolSizeOf(args: string[]): number {
  if (args.some((a) => a === "--use-pool=false")) return 0;
  for (const flag of ["--min-workers", "--pool-size"]) {
    const index = args.indexOf(flag);
    if (index >= 0) return Number(args[index + 1]);
  }
  return 3;
}
