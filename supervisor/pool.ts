/**
 * The pool's front: admits `execute` requests (sessions and packages checked, a bounded queue
 * with a deadline that covers waiting), hands each to a free worker (balancer.ts), and answers
 * it once (task.ts). The workers themselves, from spawn to exit, are lifecycle.ts's; the
 * reports, reports.ts's. Every accepted request settles exactly once.
 *
 * @module
 */

import type { Config } from "./config.ts";
import { ErrorCode, invalidParams, RpcError } from "../lib/errors.ts";
import { logger } from "../lib/logging.ts";
import { answerTooLarge } from "../lib/rpc_server.ts";
import type {
  ExecuteParams,
  ExecuteResult,
  HealthReport,
  PackagesReport,
  StatsReport,
} from "../lib/protocol.ts";
import { pickWorker } from "./balancer.ts";
import { ANSWER_LIMIT_HINT, answerForFailure, timeoutResult } from "./failures.ts";
import { WorkerLifecycle } from "./lifecycle.ts";
import { PackageCatalog } from "./packages.ts";
import type { ServedPool } from "./pool_api.ts";
import { healthReport, type PoolView, statsReport } from "./reports.ts";
import { SessionRegistry } from "./sessions.ts";
import { PoolStats } from "./stats.ts";
import { type OutputListener, Task } from "./task.ts";
import { TaskQueue } from "./task_queue.ts";
import { prepareSnapshot } from "./snapshot.ts";
import { buildWorkerCommand } from "./worker_command.ts";
import { WorkerDeadlineError, type WorkerProcess } from "./worker_process.ts";

export interface PoolOptions {
  /**
   * The pool serves as this instance of a NATS service (--nats): every result it returns, and
   * its health and stats, carry the id as `instance_id`.
   */
  instanceId?: string;
}

export class Pool implements ServedPool {
  readonly stats = new PoolStats();
  readonly instanceId: string | undefined;
  readonly sessions: SessionRegistry;
  readonly packages: PackageCatalog;
  #workers: WorkerLifecycle;
  #queue: TaskQueue<Task>;
  #running = new Map<WorkerProcess, Task>();
  /** False once shutdown starts: new requests get -32002. */
  #accepting = true;
  #sessionTimer: ReturnType<typeof setInterval> | undefined;
  #log = logger("pool");
  /** What the reports read. */
  #view: PoolView;
  #changeListeners: (() => void)[] = [];
  #changeScheduled = false;

  constructor(private readonly config: Config, options: PoolOptions = {}) {
    this.instanceId = options.instanceId;
    this.#queue = new TaskQueue(config.maxQueue);
    this.sessions = new SessionRegistry(
      config.sessionTtl * 1000,
      (id, workerId) => this.#dropInWorker(id, workerId),
    );
    this.packages = new PackageCatalog(config);
    this.#workers = new WorkerLifecycle({
      config,
      stats: this.stats,
      sessions: this.sessions,
      packages: this.packages,
      dispatch: () => this.#pump(),
      oldestQueuedAt: () => this.#queue.peek()?.arrivedAt,
    });
    this.#view = {
      config,
      stats: this.stats,
      sessions: this.sessions,
      workers: () => [...this.#workers.values()],
      queueDepth: () => this.#queue.size,
      accepting: () => this.#accepting,
      instanceId: options.instanceId,
    };
  }

  /** Starts the warm workers (none in fresh-worker mode); resolves when all are ready or failed. */
  async start(): Promise<void> {
    const started = performance.now();
    const snapshot = this.config.useSnapshot
      ? await prepareSnapshot(this.config.initTimeout * 1000)
      : undefined;
    this.#workers.useCommand(buildWorkerCommand(this.config, snapshot, this.packages.lockFileUrl));
    this.#sessionTimer = setInterval(
      () => this.#expireSessions(),
      Math.min(this.config.sessionTtl * 500, 30_000),
    );
    if (!this.config.usePool) {
      this.#pump();
      this.#log.info("fresh-worker mode: each request starts its own worker (slow baseline)");
      return;
    }
    await this.#workers.start(started);
  }

  /** Runs one request; resolves with its result or rejects with an RpcError. */
  execute(params: ExecuteParams, key: unknown, onOutput?: OutputListener): Promise<ExecuteResult> {
    const answer = this.#admit(params, key, onOutput);
    const instanceId = this.instanceId;
    return instanceId === undefined
      ? answer
      : answer.then((result) => ({ ...result, instance_id: instanceId }));
  }

  #admit(params: ExecuteParams, key: unknown, onOutput?: OutputListener): Promise<ExecuteResult> {
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
    const task = new Task(params, key, onOutput, timeoutMs, this.stats.requests);
    if (!this.#queue.push(task)) {
      task.finish({
        outcome: "overloaded",
        error: new RpcError(
          ErrorCode.Overloaded,
          "overloaded: the request queue is full; retry later",
          {
            queue_depth: this.#queue.size,
            max_queue: this.config.maxQueue,
            workers: this.#workers.size,
          },
        ),
      });
      return task.answer;
    }
    // The deadline covers waiting too: a request that times out in the queue never runs.
    task.expireInQueue(() => {
      if (!this.#queue.delete(task)) return;
      task.finish({
        result: timeoutResult(
          `timed out after ${timeoutMs} ms waiting in the queue; it never ran`,
          "",
          timeoutMs,
        ),
      });
    });
    this.#pump();
    return task.answer;
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
      task.finish({
        outcome: "cancelled",
        error: new RpcError(ErrorCode.Cancelled, "cancelled by the client before it ran", {
          id: key,
        }),
      });
      return true;
    }
    return false;
  }

  /**
   * Requests the pool could start at once: its idle workers that take work (in fresh-worker
   * mode, the room left under --pool-size), less the requests already queued.
   */
  freeSlots(): number {
    let free = 0;
    if (this.config.usePool) {
      for (const worker of this.#workers.values()) {
        if (worker.state === "idle" && !worker.retiring) free++;
      }
    } else {
      free = this.config.poolSize - this.#running.size;
    }
    return this.#accepting ? Math.max(0, free - this.#queue.size) : 0;
  }

  /**
   * Calls `listener` after the workers or the queue may have changed (a request queued,
   * started or answered, a worker ready), once per burst of changes: `freeSlots()` may differ.
   */
  onChange(listener: () => void): void {
    this.#changeListeners.push(listener);
  }

  #changed(): void {
    if (this.#changeScheduled || this.#changeListeners.length === 0) return;
    this.#changeScheduled = true;
    queueMicrotask(() => {
      this.#changeScheduled = false;
      for (const listener of this.#changeListeners) listener();
    });
  }

  /** The `packages` report: the package source, what is loaded pool-wide, what exists. */
  packagesReport(): PackagesReport {
    return this.packages.describe();
  }

  /** Pool and per-worker state, without asking the workers. */
  health(): HealthReport {
    return healthReport(this.#view);
  }

  ownsSession(id: string, tenant: string): boolean {
    return this.sessions.isOwnedBy(id, tenant);
  }

  /** Counters, latency percentiles and per-worker memory (asked of each worker, briefly). */
  statsReport(): Promise<StatsReport> {
    return statsReport(this.#view);
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
    this.#changed();
    this.#workers.stopChecks();
    clearInterval(this.#sessionTimer);
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
    this.#rejectQueued("the shutdown grace period ended before the request could run");
    await this.#workers.close();
    this.#log.info("all workers stopped");
  }

  #rejectQueued(message: string): void {
    for (const task of this.#queue.drain()) {
      task.finish({
        outcome: "shutting_down",
        error: new RpcError(ErrorCode.ShuttingDown, message, { reason: "shutdown" }),
      });
    }
  }

  /** Hands queued work to free workers. */
  #pump(): void {
    this.#changed();
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
    if (!this.config.usePool) this.#workers.spawnFresh(this.#queue.size);
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
      task.finish({ outcome: "session_not_found", error: error as RpcError });
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

  async #run(worker: WorkerProcess, task: Task): Promise<void> {
    task.start();
    worker.startWork("request");
    this.#running.set(worker, task);
    const started = performance.now();
    this.stats.wait.recordMs(started - task.arrivedAt);
    // Whole milliseconds: the worker names its limit in the timeout message.
    const remainingMs = Math.max(1, Math.round(task.timeoutMs - (started - task.arrivedAt)));
    const deadlineMs = remainingMs + this.config.timeoutGrace * 1000;
    const { params } = task;
    // Pinned as it starts, not once it ends: a request of the same session that comes
    // meanwhile must wait for this worker, not start a namespace of its own on another.
    if (params.session_id !== undefined) {
      this.sessions.touch(params.session_id, worker.id, params.tenant);
    }
    try {
      const packages = [...new Set([...this.packages.loaded, ...(params.packages ?? [])])];
      const result = await worker.call(
        "execute",
        { ...params, packages, timeout_ms: remainingMs },
        deadlineMs,
        task.onOutput,
      );
      worker.countServed();
      if (params.packages?.length && result.error?.type !== "PackageLoadError") {
        this.packages.markLoaded(params.packages);
      }
      if (params.session_id !== undefined) {
        this.sessions.touch(params.session_id, worker.id, params.tenant);
        const dropped = this.sessions.takeMoveReport(params.session_id);
        if (dropped) result.session_moved = { dropped };
      }
      // Refused here rather than when written, so that its outcome is counted as it is.
      const tooLarge = answerTooLarge(result, this.config.maxLineBytes, ANSWER_LIMIT_HINT);
      task.finish(tooLarge ? { error: tooLarge, outcome: "answer_too_large" } : { result });
    } catch (error) {
      if (error instanceof WorkerDeadlineError) {
        // The worker ignored its own timeout: it is hung or stopped. Kill and replace it.
        worker.kill("unresponsive", error.message);
      }
      const answer = answerForFailure(error, {
        workerId: worker.id,
        timeoutMs: task.timeoutMs,
        timeoutGraceS: this.config.timeoutGrace,
        ranMs: performance.now() - started,
        closing: this.#workers.closing,
      });
      if (
        "error" in answer && answer.outcome === "session_not_found" &&
        params.session_id !== undefined
      ) {
        // The worker told the client itself: no tombstone needs to tell it again.
        this.sessions.reported(params.session_id);
      }
      task.finish(answer);
    } finally {
      const ranMs = performance.now() - started;
      this.stats.run.recordMs(ranMs);
      this.stats.busyMs += ranMs;
      this.#running.delete(worker);
      // A worker killed or closed meanwhile gets no more work.
      if (worker.finishWork()) this.#workers.afterRequest(worker);
      this.#pump();
    }
  }

  /**
   * Forgets sessions unused past the TTL and frees their namespaces in the workers. A session
   * whose request runs or waits is in use: dropped in its worker, it would be dropped after that
   * request, which registers it again at its end, and its next request would find it blank.
   */
  #expireSessions(): void {
    const inUse = new Set<string>();
    for (const task of [...this.#running.values(), ...this.#queue]) {
      if (task.params.session_id !== undefined) inUse.add(task.params.session_id);
    }
    for (const { id, workerId } of this.sessions.expire(performance.now(), inUse)) {
      this.#dropInWorker(id, workerId);
    }
  }

  /** Written before any later request to that worker, which therefore finds the id free. */
  #dropInWorker(id: string, workerId: string): void {
    this.#workers.get(workerId)?.call("drop_session", { session_id: id }, 10_000).catch(() => {});
  }
}
