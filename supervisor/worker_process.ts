/**
 * One worker process as the supervisor sees it: spawns `worker_server.ts` with its sandbox,
 * speaks JSON-RPC to it over pipes, and reports its readiness and its exit. Anything the
 * worker writes that is not a JSON-RPC message is a protocol violation and ends it, since
 * the answers it owes can no longer be trusted.
 *
 * @module
 */

import { JSONRPCClient } from "json-rpc-2.0";
import { RpcError } from "../lib/errors.ts";
import { LineWriter, readFrames } from "../lib/framing.ts";
import { logger } from "../lib/logging.ts";
import type { WorkerCommand } from "./worker_command.ts";

/** A worker's memory, as it reports it when ready and after each request's after-work. */
export interface WorkerMemory {
  /** The Wasm heap. */
  heap_bytes: number;
  /** The whole process's resident memory. */
  rss_bytes: number;
  /** Files held in the in-memory file system beyond the pristine interpreter's. */
  fs_bytes: number;
}

/** What a worker announces in its `ready` notification. */
export interface ReadyInfo extends WorkerMemory {
  worker_id: string;
  pyodide_version: string;
  python_version: string;
  load_ms: number;
}

export interface ExitInfo {
  code: number;
  signal: string | null;
  /** Why the supervisor ended it, when it did. */
  reason?: KillReason;
}

export type WorkerState = "starting" | "idle" | "busy" | "stopping" | "exited";

/** Why the supervisor ended a worker; also the key of the `restarts` counter. */
export type KillReason =
  | "init_timeout"
  | "unresponsive"
  | "health_check_failed"
  | "protocol_violation"
  | "stdout_closed"
  | "close_timeout"
  | "closed";

/** The process exited (or was killed) before it answered. */
export class WorkerExitedError extends Error {
  constructor(readonly workerId: string, readonly exit: ExitInfo) {
    super(
      `worker ${workerId} exited (code ${exit.code}${exit.signal ? `, signal ${exit.signal}` : ""}${
        exit.reason ? `, ${exit.reason}` : ""
      })`,
    );
    this.name = "WorkerExitedError";
  }
}

/** The worker did not answer within the deadline. */
export class WorkerDeadlineError extends Error {
  constructor(readonly workerId: string, readonly method: string, readonly deadlineMs: number) {
    super(`worker ${workerId} did not answer ${method} within ${deadlineMs} ms`);
    this.name = "WorkerDeadlineError";
  }
}

export interface WorkerProcessOptions {
  initTimeoutMs: number;
  maxLineBytes: number;
  /** Requests after which this worker is recycled. */
  requestLimit: number;
}

export class WorkerProcess {
  readonly pid: number;
  readonly spawnedAt = performance.now();
  state: WorkerState = "starting";
  /** Requests completed (health checks not counted). */
  served = 0;
  /** No new work: it leaves once idle. */
  retiring = false;
  /** A replacement is starting because this worker reached its request limit. */
  recycling = false;
  /** The worker that replaces this one; its sessions move there. */
  successor: WorkerProcess | undefined;
  lastUsedAt = 0;
  /**
   * Answered `execute` calls whose after-work (the reset) the worker has not reported done
   * with an `idle` notification: the worker would start the next request only after it.
   */
  readonly #unsettled = new Set<number>();
  /** `idle` notifications that came before the answer they follow was handled. */
  readonly #settledEarly = new Set<number>();
  /** Milliseconds from spawn to its ready notification. */
  startupMs: number | undefined;
  readyInfo: ReadyInfo | undefined;
  /** The memory it last reported (undefined until it is ready). */
  memory: WorkerMemory | undefined;
  exitInfo: ExitInfo | undefined;
  /** Receives the worker's notifications other than `ready` (e.g. `recycle`, `idle`). */
  onNotification: (method: string, params: unknown) => void = () => {};
  /** `execute` calls sent, not yet answered. */
  readonly #executing = new Set<number>();
  readonly ready: Promise<ReadyInfo>;
  readonly exited: Promise<ExitInfo>;

  #child: Deno.ChildProcess;
  #writer: LineWriter;
  #client: JSONRPCClient;
  #killReason: KillReason | undefined;
  #lastId = 0;
  /** Streaming requests: output notifications by request id. */
  #outputHandlers = new Map<number, (output: { stream: string; text: string }) => void>();
  #log;

  constructor(
    readonly id: string,
    command: WorkerCommand,
    readonly options: WorkerProcessOptions,
  ) {
    this.#log = logger("worker", id);
    this.#child = new Deno.Command(command.executable, {
      args: [...command.args, "--worker-id", id],
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
      clearEnv: true,
      // For the deno executable itself (its cache); the program cannot read env.
      env: denoEnvironment(),
    }).spawn();
    this.pid = this.#child.pid;
    this.#writer = new LineWriter(this.#child.stdin);
    this.#client = new JSONRPCClient((request) => this.#writer.write(JSON.stringify(request)));

    let readyResolve!: (info: ReadyInfo) => void;
    let readyReject!: (error: Error) => void;
    this.ready = new Promise((resolve, reject) => {
      readyResolve = resolve;
      readyReject = reject;
    });
    this.ready.catch(() => {});
    const initTimer = setTimeout(
      () => this.kill("init_timeout", `not ready within ${options.initTimeoutMs} ms`),
      options.initTimeoutMs,
    );

    this.exited = this.#child.status.then((status) => {
      clearTimeout(initTimer);
      const exit: ExitInfo = { code: status.code, signal: status.signal, reason: this.#killReason };
      this.exitInfo = exit;
      this.state = "exited";
      const error = new WorkerExitedError(id, exit);
      readyReject(error);
      this.#client.rejectAllPendingRequests(error.message);
      return exit;
    });

    this.#readMessages((info) => {
      clearTimeout(initTimer);
      this.readyInfo = info;
      this.memory = memoryOf(info);
      this.startupMs = performance.now() - this.spawnedAt;
      if (this.state === "starting") this.state = "idle";
      readyResolve(info);
    });
  }

  /** Calls a worker method; rejects with WorkerExitedError, WorkerDeadlineError or RpcError. */
  async call<T>(
    method: string,
    params: Record<string, unknown>,
    deadlineMs: number,
    onOutput?: (output: { stream: string; text: string }) => void,
  ): Promise<T> {
    if (this.exitInfo) throw new WorkerExitedError(this.id, this.exitInfo);
    const id = ++this.#lastId;
    if (onOutput) this.#outputHandlers.set(id, onOutput);
    if (method === "execute") this.#executing.add(id);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new WorkerDeadlineError(this.id, method, deadlineMs)),
        deadlineMs,
      );
    });
    try {
      const response = await Promise.race([
        this.#client.requestAdvanced({ jsonrpc: "2.0", id, method, params }),
        deadline,
      ]);
      if (response.error) {
        const data = (response.error.data ?? {}) as Record<string, unknown>;
        throw new RpcError(response.error.code, response.error.message, data);
      }
      return response.result as T;
    } catch (error) {
      if (this.exitInfo) throw new WorkerExitedError(this.id, this.exitInfo);
      throw error;
    } finally {
      clearTimeout(timer);
      this.#outputHandlers.delete(id);
      this.#executing.delete(id);
    }
  }

  /** Whether the worker is still resetting after its last answer (see `#unsettled`). */
  get settling(): boolean {
    return this.#unsettled.size > 0;
  }

  /** Ends the process at once (SIGKILL also ends a stopped process). */
  kill(reason: KillReason, detail = ""): void {
    if (this.exitInfo) return;
    if (reason !== "closed") {
      this.#log.warn("killing worker {id}: {reason} {detail}", { id: this.id, reason, detail });
    }
    this.#killReason ??= reason;
    this.state = "stopping";
    try {
      this.#child.kill("SIGKILL");
    } catch {
      // Already gone: the exit handler reports it.
    }
  }

  /** Asks the worker to leave by closing its stdin; kills it if it has not left in time. */
  async close(graceMs = 2000): Promise<ExitInfo> {
    this.#killReason ??= "closed";
    if (this.state !== "exited") this.state = "stopping";
    await this.#writer.close();
    const timer = setTimeout(
      () => this.kill("close_timeout", `still running ${graceMs} ms after its stdin closed`),
      graceMs,
    );
    try {
      return await this.exited;
    } finally {
      clearTimeout(timer);
    }
  }

  async #readMessages(onReady: (info: ReadyInfo) => void): Promise<void> {
    try {
      for await (const frame of readFrames(this.#child.stdout, this.options.maxLineBytes)) {
        if (frame.kind === "oversized") {
          return this.#violation(`wrote a line of ${frame.bytes} bytes, over the limit`);
        }
        let message;
        try {
          message = JSON.parse(frame.text);
        } catch {
          return this.#violation(`wrote a line that is not JSON: ${frame.text.slice(0, 80)}`);
        }
        if (message?.method === "ready") onReady(message.params as ReadyInfo);
        else if (message?.method === "idle") {
          const id = message.params?.id;
          if (!this.#unsettled.delete(id)) this.#settledEarly.add(id);
          this.memory = memoryOf(message.params);
          this.onNotification(message.method, message.params);
        } else if (message?.method === "output") {
          this.#outputHandlers.get(message.params?.id)?.(message.params);
        } else if (typeof message?.method === "string" && !("id" in message)) {
          this.onNotification(message.method, message.params);
        } else if (message && typeof message === "object" && "id" in message) {
          // Marked here, in the order of the lines, not where the answer's promise resolves.
          if (this.#executing.has(message.id) && !this.#settledEarly.delete(message.id)) {
            this.#unsettled.add(message.id);
          }
          this.#client.receive(message);
        } else return this.#violation(`wrote an unexpected message: ${frame.text.slice(0, 80)}`);
      }
    } catch (error) {
      this.#log.warn("reading worker {id} failed: {error}", { id: this.id, error: String(error) });
    }
    // stdout closed. A worker on its way out exits by itself; one that lives on without a
    // way to answer is of no use.
    const timer = setTimeout(() => this.kill("stdout_closed"), 1000);
    Deno.unrefTimer(timer);
    this.exited.then(() => clearTimeout(timer));
  }

  #violation(what: string): void {
    this.kill("protocol_violation", what);
  }
}

/** The memory figures out of a worker's notification. */
function memoryOf({ heap_bytes, rss_bytes, fs_bytes }: WorkerMemory): WorkerMemory {
  return { heap_bytes, rss_bytes, fs_bytes };
}

/** The variables the deno executable needs to find its cache; nothing else is passed. */
function denoEnvironment(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const name of ["DENO_DIR", "HOME", "XDG_CACHE_HOME"]) {
    const value = Deno.env.get(name);
    if (value !== undefined) env[name] = value;
  }
  return env;
}
