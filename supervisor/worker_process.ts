/**
 * One worker process as the supervisor sees it: spawns `worker_server.ts` with its sandbox,
 * speaks JSON-RPC to it over pipes, and reports its readiness and its exit. Anything the
 * worker writes that is not a JSON-RPC message is a protocol violation and ends it, since
 * the answers it owes can no longer be trusted.
 *
 * @module
 */

import { RpcError } from "../lib/errors.ts";
import { LineWriter } from "../lib/framing.ts";
import { logger } from "../lib/logging.ts";
import type { JsonRpcId, WorkerActivity, WorkerState } from "../lib/protocol.ts";
import { type ProtocolViolation, RpcConnection } from "../lib/rpc_connection.ts";
import type {
  OutputParams,
  ReadyInfo,
  WorkerMemory,
  WorkerMethod,
  WorkerNotice,
  WorkerParams,
  WorkerResult,
} from "../lib/worker_protocol.ts";
import type { WorkerCommand } from "./worker_command.ts";

export interface ExitInfo {
  code: number;
  signal: string | null;
  /** Why the supervisor ended it, when it did. */
  reason?: KillReason;
}

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
  /** Requests after which this worker's interpreter is renewed, or the worker recycled. */
  requestLimit: number;
}

export class WorkerProcess {
  readonly pid: number;
  readonly spawnedAt = performance.now();
  /**
   * Answered `execute` calls whose after-work (the reset) the worker has not reported done
   * with an `idle` notification: the worker would start the next request only after it.
   */
  readonly #unsettled = new Set<JsonRpcId>();
  /** `idle` notifications that came before the answer they follow was handled. */
  readonly #settledEarly = new Set<JsonRpcId>();
  /** Milliseconds from spawn to its ready notification. */
  startupMs: number | undefined;
  readyInfo: ReadyInfo | undefined;
  /** The memory it last reported (undefined until it is ready). */
  memory: WorkerMemory | undefined;
  exitInfo: ExitInfo | undefined;
  /** Its notifications other than `ready` and `output` (`recycle`, `idle`, `sessions_lost`). */
  onNotification: (notice: WorkerNotice) => void = () => {};
  /** `execute` calls sent, not yet answered. */
  readonly #executing = new Set<number>();
  readonly ready: Promise<ReadyInfo>;
  readonly exited: Promise<ExitInfo>;

  #state: WorkerState = "starting";
  #work: WorkerActivity | undefined;
  #served = 0;
  /** `#served` when the interpreter was last renewed. */
  #servedAtRenewal = 0;
  #renewals = 0;
  #lastUsedAt = 0;
  #retiring = false;
  #recycling = false;
  #successor: WorkerProcess | undefined;
  #child: Deno.ChildProcess;
  #writer: LineWriter;
  #connection: RpcConnection;
  #killReason: KillReason | undefined;
  #lastId = 0;
  /** Streaming requests: output notifications by request id. */
  #outputHandlers = new Map<JsonRpcId, (output: OutputParams) => void>();
  #onReady: (info: ReadyInfo) => void;
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
    this.#onReady = (info) => {
      clearTimeout(initTimer);
      this.readyInfo = info;
      this.memory = memoryOf(info);
      this.startupMs = performance.now() - this.spawnedAt;
      if (this.#state === "starting") this.#state = "idle";
      readyResolve(info);
    };

    this.exited = this.#child.status.then((status) => {
      clearTimeout(initTimer);
      const exit: ExitInfo = { code: status.code, signal: status.signal, reason: this.#killReason };
      this.exitInfo = exit;
      this.#state = "exited";
      const error = new WorkerExitedError(id, exit);
      readyReject(error);
      this.#connection.fail(error);
      return exit;
    });

    this.#connection = new RpcConnection(
      this.#child.stdout,
      // The connection writes whole lines; the LineWriter adds the newline itself.
      (line) => Promise.resolve(this.#writer.write(line.slice(0, -1))),
      {
        maxLineBytes: options.maxLineBytes,
        accept: isWorkerMessage,
        onMessage: (message) => this.#markAnswered(message as WorkerMessage),
        onNotification: (method, params) => this.#notified(method, params),
        onViolation: (violation) => {
          this.kill("protocol_violation", violationText(violation));
          return this.exited.then((exit) => new WorkerExitedError(id, exit));
        },
        closeReason: (readError) => {
          if (readError !== undefined) {
            this.#log.warn("reading worker {id} failed: {error}", {
              id,
              error: String(readError),
            });
          }
          // stdout closed. A worker on its way out exits by itself; one that lives on without
          // a way to answer is of no use.
          const timer = setTimeout(() => this.kill("stdout_closed"), 1000);
          Deno.unrefTimer(timer);
          return this.exited.then((exit) => {
            clearTimeout(timer);
            return new WorkerExitedError(id, exit);
          });
        },
      },
    );
  }

  /** Where it is in its life; `busy` covers every kind of work (see `work`). */
  get state(): WorkerState {
    return this.#state;
  }

  /** What it is busy with, while busy. */
  get work(): WorkerActivity | undefined {
    return this.#state === "busy" ? this.#work : undefined;
  }

  /** When it last finished a request (ms, monotonic); 0 if never. */
  get lastUsedAt(): number {
    return this.#lastUsedAt;
  }

  /** Requests completed (health checks not counted). */
  get served(): number {
    return this.#served;
  }

  /** Requests completed since its interpreter started or was last renewed. */
  get servedSinceRenewal(): number {
    return this.#served - this.#servedAtRenewal;
  }

  /** Times its interpreter was renewed in place (`renew`). */
  get renewals(): number {
    return this.#renewals;
  }

  /** Its interpreter was renewed: the request limit counts again from here. */
  countRenewal(): void {
    this.#renewals++;
    this.#servedAtRenewal = this.#served;
  }

  /** No new work: it leaves once idle. */
  get retiring(): boolean {
    return this.#retiring;
  }

  /** A replacement is starting because this worker asked for one or reached its limit. */
  get recycling(): boolean {
    return this.#recycling;
  }

  /** The worker that replaces this one; its sessions move there. */
  get successor(): WorkerProcess | undefined {
    return this.#successor;
  }

  /** An idle worker takes up work. */
  startWork(kind: WorkerActivity): void {
    this.#state = "busy";
    this.#work = kind;
  }

  /**
   * Back to idle once the work is done; false if it was killed or closed meanwhile (it then
   * gets no more work). The end of a request counts as its last use.
   */
  finishWork(): boolean {
    if (this.#state !== "busy") return false;
    if (this.#work === "request") this.#lastUsedAt = performance.now();
    this.#state = "idle";
    this.#work = undefined;
    return true;
  }

  /** Counts a request it answered. */
  countServed(): void {
    this.#served++;
  }

  /** Takes no more work from now on. */
  retire(): void {
    this.#retiring = true;
  }

  /** Its replacement starts; false if one is starting already. */
  startRecycling(): boolean {
    if (this.#recycling) return false;
    this.#recycling = true;
    return true;
  }

  /** Its replacement failed to start: a later recycle may start another. */
  recyclingFailed(): void {
    this.#recycling = false;
  }

  /** Its replacement is ready: it takes no more work, and its sessions go there. */
  handOver(successor: WorkerProcess): void {
    this.#successor = successor;
    this.#retiring = true;
  }

  /** Calls a worker method; rejects with WorkerExitedError, WorkerDeadlineError or RpcError. */
  async call<M extends WorkerMethod>(
    method: M,
    params: WorkerParams<M>,
    deadlineMs: number,
    onOutput?: (output: OutputParams) => void,
  ): Promise<WorkerResult<M>> {
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
        this.#connection.request(method, params, id),
        deadline,
      ]);
      if (response.error) {
        const data = (response.error.data ?? {}) as Record<string, unknown>;
        throw new RpcError(response.error.code, response.error.message, data);
      }
      // Trusted as the contract types it: Python cannot reach the worker's stdout.
      return response.result as WorkerResult<M>;
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
    this.#state = "stopping";
    try {
      this.#child.kill("SIGKILL");
    } catch {
      // Already gone: the exit handler reports it.
    }
  }

  /** Asks the worker to leave by closing its stdin; kills it if it has not left in time. */
  async close(graceMs = 2000): Promise<ExitInfo> {
    this.#killReason ??= "closed";
    if (this.#state !== "exited") this.#state = "stopping";
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

  /** An answer to an `execute` call awaits its `idle` notification (see `#unsettled`). */
  #markAnswered(message: WorkerMessage): void {
    // Marked here, in the order of the lines, not where the answer's promise resolves.
    if (!("id" in message) || typeof message.id !== "number") return;
    if (this.#executing.has(message.id) && !this.#settledEarly.delete(message.id)) {
      this.#unsettled.add(message.id);
    }
  }

  #notified(method: string, params: unknown): void {
    // Checked as a message by `isWorkerMessage`; its params are as the contract types them.
    const notice = { method, params } as WorkerNotice;
    switch (notice.method) {
      case "ready":
        return this.#onReady(notice.params);
      case "output":
        return this.#outputHandlers.get(notice.params.id)?.(notice.params);
      case "idle":
        if (!this.#unsettled.delete(notice.params.id)) this.#settledEarly.add(notice.params.id);
        this.memory = memoryOf(notice.params);
    }
    this.onNotification(notice);
  }
}

/** A line a worker may write: a notification (a string `method`, no `id`) or an answer. */
type WorkerMessage =
  | { method: string; params?: unknown }
  | { id: unknown; result?: unknown; error?: unknown };

/** Whether a value read from a worker is a message it may write; anything else ends it. */
function isWorkerMessage(value: unknown): value is WorkerMessage {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return false;
  return "id" in value || ("method" in value && typeof value.method === "string");
}

/** A protocol violation, as the kill's log words it. */
function violationText(violation: ProtocolViolation): string {
  switch (violation.kind) {
    case "oversized":
      return `wrote a line of ${violation.bytes} bytes, over the limit`;
    case "not_json":
      return `wrote a line that is not JSON: ${violation.text.slice(0, 80)}`;
    case "refused":
      return `wrote an unexpected message: ${violation.text.slice(0, 80)}`;
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
