/**
 * The set of workers and the work waiting for them: accepts `execute` requests, queues them
 * (bounded), hands each to the least busy worker, and keeps the pool whole: health checks,
 * replacement of crashed or hung workers with backoff, recycling after a request limit, and
 * graceful shutdown. Every accepted request settles exactly once.
 *
 * @module
 */

import type { Config } from "./config.ts";
import { ErrorCode, invalidParams, messageOf, RpcError } from "../lib/errors.ts";
import { logger } from "../lib/logging.ts";
import type { ExecuteParams, ExecuteResult } from "../lib/protocol.ts";
import { decideScale } from "./autoscaler.ts";
import { pickWorker } from "./balancer.ts";
import { PackageCatalog } from "./packages.ts";
import { SessionRegistry } from "./sessions.ts";
import { PoolStats } from "./stats.ts";
import { TaskQueue } from "./task_queue.ts";
import { prepareSnapshot } from "./snapshot.ts";
import { buildWorkerCommand, internalMaxLineBytes, type WorkerCommand } from "./worker_command.ts";
import {
  type ExitInfo,
  WorkerDeadlineError,
  WorkerExitedError,
  WorkerProcess,
} from "./worker_process.ts";

/** What a worker reports once it is done with a request's after-work. */
interface IdleParams {
  reset: "image" | "python" | "none";
  reset_ms: number;
  /** The base image put back before the run, when the owner changed. */
  restore_ms?: number;
  park_ms?: number;
  resume_ms?: number;
  resumed_bytes?: number;
  parked_bytes: number;
  /** The interpreter crashed or exited, and was put back in place: how it ended. */
  recovered?: "exited" | "crashed";
}

/** Receives a streaming request's output as it is written. */
export type OutputListener = (output: { stream: string; text: string }) => void;

interface Task {
  params: ExecuteParams;
  /** The client's request id, for cancellation. */
  key: unknown;
  onOutput?: OutputListener;
  timeoutMs: number;
  arrivedAt: number;
  queueTimer?: ReturnType<typeof setTimeout>;
  resolve: (result: ExecuteResult) => void;
  reject: (error: RpcError) => void;
}

const HEALTH_CODE = "print('HEALTH_OK')";
const MAX_RESTART_DELAY_MS = 30_000;
/** How often the autoscaling policy looks at the pool, when it is on. */
const SCALE_CHECK_MS = 100;

/** A timeout result produced by the supervisor itself (queue wait or unresponsive worker). */
function timeoutResult(message: string, workerId: string, durationMs: number): ExecuteResult {
  return {
    status: "timeout",
    stdout: "",
    stderr: "",
    truncated: false,
    result: null,
    error: { type: "TimeoutError", message, traceback: "" },
    files: [],
    figures: [],
    duration_ms: durationMs,
    worker_id: workerId,
  };
}

export class Pool {
  readonly stats = new PoolStats();
  #workers = new Map<string, WorkerProcess>();
  #queue: TaskQueue<Task>;
  #running = new Map<WorkerProcess, Task>();
  #workerNumber = 0;
  #startFailures = 0;
  #restartTimers = new Set<ReturnType<typeof setTimeout>>();
  #healthTimer: ReturnType<typeof setInterval> | undefined;
  /** Runs the autoscaling policy; only when --max-workers exceeds --min-workers. */
  #scaleTimer: ReturnType<typeof setInterval> | undefined;
  /** False once shutdown starts: new requests get -32002. */
  #accepting = true;
  /** True once the pool stops for good: no more spawns or restarts. */
  #closing = false;
  #log = logger("pool");

  /** Set by start(), once the snapshot is known: no worker starts before. */
  #command: WorkerCommand | undefined;
  readonly sessions: SessionRegistry;
  readonly packages: PackageCatalog;
  #sessionTimer: ReturnType<typeof setInterval> | undefined;

  constructor(private readonly config: Config) {
    this.#queue = new TaskQueue(config.maxQueue);
    this.sessions = new SessionRegistry(
      config.sessionTtl * 1000,
      (id, workerId) => this.#dropInWorker(id, workerId),
    );
    this.packages = new PackageCatalog(config);
  }

  /** Starts the warm workers (none in fresh-worker mode); resolves when all are ready or failed. */
  async start(): Promise<void> {
    const started = performance.now();
    const snapshot = this.config.useSnapshot
      ? await prepareSnapshot(this.config.initTimeout * 1000)
      : undefined;
    this.#command = buildWorkerCommand(this.config, snapshot, this.packages.lockFileUrl);
    this.#sessionTimer = setInterval(
      () => this.#expireSessions(),
      Math.min(this.config.sessionTtl * 500, 30_000),
    );
    if (!this.config.usePool) {
      this.#pump();
      this.#log.info("fresh-worker mode: each request starts its own worker (slow baseline)");
      return;
    }
    const workers = Array.from({ length: this.config.minWorkers }, () => this.#spawn());
    let ready = 0;
    await Promise.all(workers.map(async (worker) => {
      try {
        await worker.ready;
        ready++;
        this.#log.info("worker {id} ready ({ready}/{total}) in {ms} ms", {
          id: worker.id,
          ready,
          total: workers.length,
          ms: Math.round(performance.now() - worker.spawnedAt),
        });
      } catch {
        // The exit handler logs it and schedules a replacement.
      }
    }));
    this.#log.info("pool ready: {ready}/{total} workers in {ms} ms", {
      ready,
      total: workers.length,
      ms: Math.round(performance.now() - started),
    });
    if (this.config.maxWorkers > this.config.minWorkers) {
      this.#scaleTimer = setInterval(() => this.#autoscale(), SCALE_CHECK_MS);
    }
    if (this.config.healthCheckInterval > 0) {
      this.#healthTimer = setInterval(
        () => this.#healthCheck(),
        this.config.healthCheckInterval * 1000,
      );
    }
  }

  /** Runs one request; resolves with its result or rejects with an RpcError. */
  execute(params: ExecuteParams, key: unknown, onOutput?: OutputListener): Promise<ExecuteResult> {
    if (!this.#accepting) {
      return Promise.reject(
        new RpcError(ErrorCode.ShuttingDown, "the pool is shutting down", { reason: "shutdown" }),
      );
    }
    try {
      if (params.session_id !== undefined) {
        if (!this.config.usePool) {
          throw invalidParams("session_id", "needs the warm pool (usePool is false)");
        }
        this.sessions.workerOf(params.session_id, params.tenant);
        this.sessions.claim(params.session_id, params.tenant);
      }
      this.packages.check(params.packages ?? []);
    } catch (error) {
      return Promise.reject(error);
    }
    const maxMs = this.config.maxExecTimeout * 1000;
    const timeoutMs = Math.min(params.timeout_ms ?? this.config.execTimeout * 1000, maxMs);
    return new Promise((resolve, reject) => {
      const task: Task = {
        params,
        key,
        onOutput,
        timeoutMs,
        arrivedAt: performance.now(),
        resolve,
        reject,
      };
      if (!this.#queue.push(task)) {
        this.stats.requests.add("overloaded");
        reject(
          new RpcError(ErrorCode.Overloaded, "overloaded: the request queue is full; retry later", {
            queue_depth: this.#queue.size,
            max_queue: this.config.maxQueue,
            workers: this.#workers.size,
          }),
        );
        return;
      }
      // The deadline covers waiting too: a request that times out in the queue never runs.
      task.queueTimer = setTimeout(() => {
        if (!this.#queue.delete(task)) return;
        this.stats.requests.add("timeout");
        resolve(
          timeoutResult(
            `timed out after ${timeoutMs} ms waiting in the queue; it never ran`,
            "",
            timeoutMs,
          ),
        );
      }, timeoutMs);
      this.#pump();
    });
  }

  /**
   * Cancels a request by its client id: a queued one is answered -32003 at once; a running
   * one is interrupted, and its answer is -32003. False if no such request is pending.
   */
  cancel(key: unknown): boolean {
    for (const [worker, task] of this.#running) {
      if (task.key !== key) continue;
      worker.call("cancel", {}, 1000).catch(() => {});
      return true;
    }
    for (const task of this.#queue) {
      if (task.key !== key) continue;
      this.#queue.delete(task);
      clearTimeout(task.queueTimer);
      this.stats.requests.add("cancelled");
      task.reject(
        new RpcError(ErrorCode.Cancelled, "cancelled by the client before it ran", { id: key }),
      );
      return true;
    }
    return false;
  }

  /** Pool and per-worker state, without asking the workers. */
  health(): Record<string, unknown> {
    const workers = [...this.#workers.values()].map((w) => ({
      id: w.id,
      pid: w.pid,
      state: w.state,
      retiring: w.retiring,
      served: w.served,
      request_limit: w.options.requestLimit,
      uptime_ms: Math.round(performance.now() - w.spawnedAt),
      startup_ms: w.startupMs === undefined ? null : Math.round(w.startupMs),
      // As the worker last reported them (when ready, and after each request).
      heap_bytes: w.memory?.heap_bytes ?? null,
      rss_bytes: w.memory?.rss_bytes ?? null,
      fs_bytes: w.memory?.fs_bytes ?? null,
      sessions: this.sessions.idsOn(w.id),
    }));
    const ready = workers.filter((w) => w.state === "idle" || w.state === "busy").length;
    const wanted = this.config.usePool ? this.config.minWorkers : 0;
    return {
      status: !this.#accepting
        ? "shutting_down"
        : ready >= wanted
        ? "ok"
        : ready > 0
        ? "degraded"
        : "unavailable",
      ready_workers: ready,
      pool_size: this.config.poolSize,
      min_workers: this.config.minWorkers,
      max_workers: this.config.maxWorkers,
      use_pool: this.config.usePool,
      queue_depth: this.#queue.size,
      workers,
    };
  }

  /** Counters, latency percentiles and per-worker memory (asked of each worker, briefly). */
  async statsReport(): Promise<Record<string, unknown>> {
    const uptimeMs = performance.now() - this.stats.startedAt;
    const workers = await Promise.all([...this.#workers.values()].map(async (w) => {
      const base = { id: w.id, state: w.state, served: w.served };
      if (w.state !== "idle" && w.state !== "busy") return base;
      try {
        return { ...base, ...(await w.call<Record<string, unknown>>("stats", {}, 1000)) };
      } catch (error) {
        return { ...base, error: String(error) };
      }
    }));
    const busy = [...this.#workers.values()].filter((w) => w.state === "busy").length;
    return {
      uptime_ms: Math.round(uptimeMs),
      requests: this.stats.requests.toJSON(),
      requests_total: this.stats.requests.total,
      restarts: this.stats.restarts.toJSON(),
      scaling: this.stats.scaling.toJSON(),
      queue_depth: this.#queue.size,
      busy_workers: busy,
      idle_workers: [...this.#workers.values()].filter((w) => w.state === "idle").length,
      utilization: this.#workers.size
        ? Math.min(1, this.stats.busyMs / (uptimeMs * this.#workers.size))
        : 0,
      wait: this.stats.wait.summary(),
      run: this.stats.run.summary(),
      isolation: this.config.isolation,
      resets: this.stats.resets.toJSON(),
      recoveries: this.stats.recoveries.toJSON(),
      reset: this.stats.reset.summary(),
      park: this.stats.park.summary(),
      resume: this.stats.resume.summary(),
      supervisor_rss_bytes: Deno.memoryUsage().rss,
      workers,
    };
  }

  /**
   * Stops taking work and ends every worker. Running requests may finish within `graceMs`.
   * Queued requests are answered with -32002 at once, or, with `drainQueue` (the client
   * closed its input and is waiting for its answers), still run if they can start and finish
   * within the grace period.
   */
  async shutdown(graceMs: number, { drainQueue = false } = {}): Promise<void> {
    if (!this.#accepting) return;
    this.#accepting = false;
    clearInterval(this.#healthTimer);
    clearInterval(this.#sessionTimer);
    clearInterval(this.#scaleTimer);
    const deadline = performance.now() + graceMs;
    const busy = () => this.#running.size > 0 || (drainQueue && this.#queue.size > 0);
    if (!drainQueue) this.#rejectQueued("the pool is shutting down; the request never ran");
    if (busy()) {
      this.#log.info("waiting up to {ms} ms for {running} running and {queued} queued requests", {
        ms: graceMs,
        running: this.#running.size,
        queued: drainQueue ? this.#queue.size : 0,
      });
      while (busy() && performance.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    }
    this.#closing = true;
    for (const timer of this.#restartTimers) clearTimeout(timer);
    this.#rejectQueued("the shutdown grace period ended before the request could run");
    await Promise.all([...this.#workers.values()].map((w) => w.close()));
    this.#log.info("all workers stopped");
  }

  #rejectQueued(message: string): void {
    for (const task of this.#queue.drain()) {
      clearTimeout(task.queueTimer);
      this.stats.requests.add("shutting_down");
      task.reject(new RpcError(ErrorCode.ShuttingDown, message, { reason: "shutdown" }));
    }
  }

  #spawn(replaces?: WorkerProcess): WorkerProcess {
    const id = `w${++this.#workerNumber}`;
    const limit = this.config.usePool ? jitter(this.config.workerRequestLimit) : 1;
    const worker = new WorkerProcess(id, this.#command!, {
      initTimeoutMs: this.config.initTimeout * 1000,
      // Worker lines may be larger than the client's (results with base64 states and files).
      maxLineBytes: internalMaxLineBytes(this.config),
      requestLimit: limit,
    });
    this.#workers.set(id, worker);
    this.#log.debug("spawned worker {id} (pid {pid})", { id, pid: worker.pid });
    worker.onNotification = (method, params) => {
      if (method === "idle") return this.#settled(params as IdleParams);
      if (method === "sessions_lost") {
        const { session_ids, reason } = params as { session_ids: string[]; reason: string };
        this.sessions.lose(session_ids, id, reason);
        return;
      }
      if (method !== "recycle") return;
      const reason = String((params as { reason?: unknown } | undefined)?.reason ?? "asked");
      this.#log.info("worker {id} asks to be replaced: {params}", {
        id,
        params: JSON.stringify(params),
      });
      // A tainted worker must not run another request, even before its replacement is up.
      if (reason === "tainted") worker.retiring = true;
      this.#recycle(worker, reason);
    };
    worker.ready.then(async () => {
      this.#startFailures = 0;
      await this.#preload(worker);
      if (replaces) {
        this.#log.info("worker {id} replaces {old}", { id, old: replaces.id });
        replaces.successor = worker;
        this.#retire(replaces);
      }
      this.#pump();
    }, () => {
      if (replaces) replaces.recycling = false;
    });
    worker.exited.then((exit) => this.#onExit(worker, exit));
    return worker;
  }

  /** A worker's after-work report (the `idle` notification): its costs, for the stats. */
  #settled(idle: IdleParams): void {
    if (idle.restore_ms !== undefined) {
      this.stats.resets.add("image");
      this.stats.reset.recordMs(idle.restore_ms);
    }
    if (idle.reset !== "none") {
      this.stats.resets.add(idle.reset);
      this.stats.reset.recordMs(idle.reset_ms);
    }
    if (idle.recovered !== undefined) this.stats.recoveries.add(idle.recovered);
    if (idle.park_ms !== undefined) this.stats.park.recordMs(idle.park_ms);
    if (idle.resume_ms !== undefined) this.stats.resume.recordMs(idle.resume_ms);
  }

  /** Hands queued work to free workers. */
  #pump(): void {
    if (this.#queue.size === 0) return;
    let dispatched = false;
    for (const task of this.#queue) {
      const id = this.#workerFor(task);
      if (id === undefined) continue;
      this.#queue.delete(task);
      this.#run(this.#workers.get(id)!, task);
      dispatched = true;
      // #run changed the workers' states; start over with the new picture.
      break;
    }
    if (dispatched) return this.#pump();
    if (!this.config.usePool) this.#spawnFresh();
  }

  /**
   * The worker that may run `task` now: a session's own worker, a worker with room for a new
   * session, or any free worker. A task whose session was lost meanwhile is answered here.
   */
  #workerFor(task: Task): string | undefined {
    const sessionId = task.params.session_id;
    if (sessionId === undefined) return pickWorker(this.#workers.values());
    let pinned: string | undefined;
    try {
      pinned = this.sessions.workerOf(sessionId, task.params.tenant);
    } catch (error) {
      this.#queue.delete(task);
      clearTimeout(task.queueTimer);
      this.stats.requests.add("session_not_found");
      task.reject(error as RpcError);
      return undefined;
    }
    if (pinned !== undefined) return pickWorker(this.#workers.values(), (id) => id === pinned);
    return pickWorker(this.#workers.values(), (id) => this.#hasSessionRoom(id));
  }

  /** Room for one more session, counting those still moving here from a retiring worker. */
  #hasSessionRoom(id: string): boolean {
    let held = this.sessions.countOn(id);
    for (const worker of this.#workers.values()) {
      if (worker.successor?.id === id) held += this.sessions.countOn(worker.id);
    }
    return held < this.config.maxSessionsPerWorker;
  }

  /** Fresh-worker mode: one new worker per waiting request, up to the pool size. */
  #spawnFresh(): void {
    if (this.#closing || !this.#command) return;
    const starting = [...this.#workers.values()].filter((w) => w.state === "starting").length;
    if (starting < this.#queue.size && this.#workers.size < this.config.poolSize) this.#spawn();
  }

  async #run(worker: WorkerProcess, task: Task): Promise<void> {
    clearTimeout(task.queueTimer);
    worker.state = "busy";
    this.#running.set(worker, task);
    const started = performance.now();
    this.stats.wait.recordMs(started - task.arrivedAt);
    // Whole milliseconds: the worker names its limit in the timeout message.
    const remainingMs = Math.max(1, Math.round(task.timeoutMs - (started - task.arrivedAt)));
    const deadlineMs = remainingMs + this.config.timeoutGrace * 1000;
    try {
      const { params } = task;
      const packages = [...new Set([...this.packages.loaded, ...(params.packages ?? [])])];
      const result = await worker.call<ExecuteResult>(
        "execute",
        { ...params, packages, timeout_ms: remainingMs },
        deadlineMs,
        task.onOutput,
      );
      worker.served++;
      if (params.packages?.length && result.error?.type !== "PackageLoadError") {
        this.packages.markLoaded(params.packages);
      }
      if (params.session_id !== undefined) {
        this.sessions.touch(params.session_id, worker.id, params.tenant);
        const dropped = this.sessions.takeMoveReport(params.session_id);
        if (dropped) result.session_moved = { dropped };
      }
      this.stats.requests.add(result.status);
      task.resolve(result);
    } catch (error) {
      this.#failTask(worker, task, error, performance.now() - started);
    } finally {
      const ranMs = performance.now() - started;
      this.stats.run.recordMs(ranMs);
      this.stats.busyMs += ranMs;
      this.#running.delete(worker);
      this.#afterRun(worker);
    }
  }

  #failTask(worker: WorkerProcess, task: Task, error: unknown, ranMs: number): void {
    if (error instanceof WorkerDeadlineError) {
      // The worker ignored its own timeout: it is hung or stopped. Kill and replace it.
      worker.kill("unresponsive", error.message);
      this.stats.requests.add("timeout");
      task.resolve(timeoutResult(
        `worker ${worker.id} did not stop within ${task.timeoutMs} ms + ${this.config.timeoutGrace} s grace; it was killed and replaced`,
        worker.id,
        ranMs,
      ));
    } else if (error instanceof WorkerExitedError && this.#closing) {
      this.stats.requests.add("shutting_down");
      task.reject(
        new RpcError(ErrorCode.ShuttingDown, "the pool shut down before the request finished", {
          worker_id: worker.id,
          reason: "shutdown grace period expired",
        }),
      );
    } else if (error instanceof WorkerExitedError) {
      this.stats.requests.add("worker_died");
      task.reject(
        new RpcError(
          ErrorCode.WorkerDied,
          `${error.message} while running this request; it was not re-run`,
          {
            worker_id: worker.id,
            exit_code: error.exit.code,
            signal: error.exit.signal,
            reason: error.exit.reason ?? "crashed",
          },
        ),
      );
    } else if (error instanceof RpcError) {
      const lost = error.code === ErrorCode.SessionNotFound;
      if (lost && task.params.session_id !== undefined) {
        this.sessions.reported(task.params.session_id);
      }
      this.stats.requests.add(
        lost ? "session_not_found" : error.code === ErrorCode.Cancelled ? "cancelled" : "rejected",
      );
      task.reject(error);
    } else {
      this.stats.requests.add("internal_error");
      task.reject(new RpcError(ErrorCode.InternalError, String(error), { worker_id: worker.id }));
    }
  }

  #afterRun(worker: WorkerProcess): void {
    // A worker killed or closed meanwhile gets no more work.
    if (worker.state !== "busy") return this.#pump();
    worker.state = "idle";
    worker.lastUsedAt = performance.now();
    if (worker.retiring) {
      this.#retire(worker);
    } else if (worker.served >= worker.options.requestLimit) {
      this.#recycle(worker, "recycled");
    }
    this.#pump();
  }

  /** Replaces a worker on purpose: the replacement starts first, this one serves until then. */
  #recycle(worker: WorkerProcess, reason: string): void {
    if (!this.config.usePool) return this.#retire(worker);
    if (worker.recycling || this.#closing) return;
    worker.recycling = true;
    this.stats.restarts.add(reason);
    this.#spawn(worker);
  }

  /** No more work for this worker; it leaves when idle. */
  #retire(worker: WorkerProcess): void {
    worker.retiring = true;
    if (worker.state === "idle") this.#leave(worker);
  }

  /** An idle retiring worker leaves; its sessions move to its successor first, if it has one. */
  async #leave(worker: WorkerProcess): Promise<void> {
    worker.state = "busy";
    const successor = worker.successor;
    if (successor && this.sessions.idsOn(worker.id).length > 0) {
      try {
        // A session moves pickled (`--isolation none`, which reports the names it dropped) or
        // as its memory image (which drops nothing).
        const { sessions } = await worker.call<{
          sessions: Record<string, { dropped?: string[] }>;
        }>("export_sessions", {}, 30_000);
        const { failed } = await successor.call<{ failed: Record<string, string> }>(
          "import_sessions",
          { sessions },
          30_000,
        );
        const dropped = Object.fromEntries(
          Object.entries(sessions).map(([id, entry]) => [id, entry.dropped ?? []]),
        );
        this.sessions.move(worker.id, successor.id, dropped, failed);
        this.#log.info("moved {n} sessions from {old} to {new}", {
          n: Object.keys(sessions).length,
          old: worker.id,
          new: successor.id,
        });
      } catch (error) {
        const why = messageOf(error);
        this.#log.warn("could not move the sessions of {id}: {error}", {
          id: worker.id,
          error: why,
        });
        this.sessions.loseWorker(
          worker.id,
          `could not move when worker ${worker.id} was replaced: ${why}`,
        );
      }
    }
    await worker.close();
    this.#pump();
  }

  /** Loads the pool-wide packages into a new worker before it takes work. */
  async #preload(worker: WorkerProcess): Promise<void> {
    const packages = this.packages.loaded;
    if (packages.length === 0 || worker.state !== "idle") return;
    worker.state = "busy";
    try {
      const result = await worker.call<ExecuteResult>(
        "execute",
        { code: "pass", packages, timeout_ms: this.config.initTimeout * 1000 },
        this.config.initTimeout * 1000,
      );
      if (result.status !== "ok") {
        this.#log.warn("worker {id} could not preload {packages}: {error}", {
          id: worker.id,
          packages: packages.join(", "),
          error: result.error?.message ?? result.status,
        });
      }
    } catch (error) {
      this.#log.warn("worker {id} failed while preloading: {error}", {
        id: worker.id,
        error: String(error),
      });
    } finally {
      if (worker.state === "busy") worker.state = "idle";
    }
  }

  /** Forgets sessions unused past the TTL and frees their namespaces in the workers. */
  #expireSessions(): void {
    for (const { id, workerId } of this.sessions.expire()) this.#dropInWorker(id, workerId);
  }

  /** Written before any later request to that worker, which therefore finds the id free. */
  #dropInWorker(id: string, workerId: string): void {
    this.#workers.get(workerId)?.call("drop_session", { session_id: id }, 10_000).catch(() => {});
  }

  #onExit(worker: WorkerProcess, exit: ExitInfo): void {
    this.#workers.delete(worker.id);
    // Sessions still here (none after a successful move) died with the process.
    this.sessions.loseWorker(
      worker.id,
      `was lost when worker ${worker.id} exited (${exit.reason ?? `code ${exit.code}`})`,
    );
    if (this.#closing || worker.retiring) {
      this.#log.debug("worker {id} left (code {code})", { id: worker.id, code: exit.code });
      // In fresh-worker mode its place may be what a queued request waits for.
      return this.#pump();
    }
    const neverReady = worker.readyInfo === undefined;
    const reason = exit.reason ?? (neverReady ? "failed to start" : "crashed");
    this.#log.warn("worker {id} exited unexpectedly: code {code}, signal {signal}, {reason}", {
      id: worker.id,
      code: exit.code,
      signal: exit.signal,
      reason,
    });
    if (!this.config.usePool) {
      this.#pump();
      return;
    }
    this.stats.restarts.add(neverReady ? "start_failed" : exit.reason ?? "crashed");
    if (neverReady) this.#startFailures++;
    // Backoff only while starts keep failing: a crash of a healthy worker restarts at once.
    const delay = this.#startFailures === 0
      ? 0
      : Math.min(MAX_RESTART_DELAY_MS, 500 * 2 ** (this.#startFailures - 1));
    if (delay > 0) {
      this.#log.warn("restarting in {delay} ms after {n} failed starts", {
        delay,
        n: this.#startFailures,
      });
    }
    const timer = setTimeout(() => {
      this.#restartTimers.delete(timer);
      if (!this.#closing) this.#spawn();
    }, delay);
    this.#restartTimers.add(timer);
  }

  /** Applies one step of the autoscaling policy (autoscaler.ts). */
  #autoscale(): void {
    if (this.#closing || !this.#accepting) return;
    const now = performance.now();
    const oldest = this.#queue[Symbol.iterator]().next();
    const decision = decideScale({
      workers: [...this.#workers.values()].map((w) => ({
        id: w.id,
        state: w.state,
        leaving: w.retiring || w.recycling,
        idleMs: now - Math.max(w.lastUsedAt, w.spawnedAt + (w.startupMs ?? 0)),
        sessions: this.sessions.countOn(w.id),
      })),
      oldestWaitMs: oldest.done ? undefined : now - oldest.value.arrivedAt,
      minWorkers: this.config.minWorkers,
      maxWorkers: this.config.maxWorkers,
      scaleUpWaitMs: this.config.scaleUpWaitMs,
      scaleDownIdleMs: this.config.scaleDownIdle * 1000,
    });
    if (decision.action === "none") return;
    this.stats.scaling.add(decision.action === "grow" ? "up" : "down");
    if (decision.action === "grow") {
      this.#log.info("scaling up to {to} workers: {reason}", decision);
      this.#spawn();
    } else {
      this.#log.info("scaling down to {to} workers: {reason}", decision);
      this.#retire(this.#workers.get(decision.id)!);
    }
  }

  /** Asks every idle worker to really run Python; replaces those that fail or hang. */
  #healthCheck(): void {
    for (const worker of this.#workers.values()) {
      if (worker.state !== "idle" || worker.retiring) continue;
      worker.state = "busy";
      const timeoutMs = this.config.healthCheckTimeout * 1000;
      worker.call<ExecuteResult>("execute", { code: HEALTH_CODE, timeout_ms: timeoutMs }, timeoutMs)
        .then((result) => {
          if (result.status !== "ok" || result.stdout !== "HEALTH_OK\n") {
            throw new Error(`unexpected answer: ${JSON.stringify(result).slice(0, 200)}`);
          }
        })
        .catch((error) => {
          this.#log.warn("worker {id} failed its health check: {error}", {
            id: worker.id,
            error: String(error),
          });
          worker.kill("health_check_failed", String(error));
        })
        .finally(() => {
          if (worker.state === "busy") worker.state = "idle";
          this.#pump();
        });
    }
  }
}

/** Spreads recycling: a limit within 10% below the configured one. */
function jitter(limit: number): number {
  return Math.max(1, limit - Math.floor(Math.random() * Math.ceil(limit * 0.1)));
}
