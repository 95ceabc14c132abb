/**
 * The pool's workers from spawn to exit: starts them, keeps them checked (health checks),
 * replaces them (recycling after a request limit or on a worker's own request, restarts after
 * a crash with backoff while starts keep failing), grows and shrinks the pool (autoscaler.ts), and
 * lets a worker leave only once its sessions have moved to its successor. Worker state changes
 * only through WorkerProcess's methods; pool.ts hands out the work.
 *
 * @module
 */

import type { Config } from "./config.ts";
import { messageOf } from "../lib/errors.ts";
import { logger } from "../lib/logging.ts";
import { decideScale } from "./autoscaler.ts";
import type { PackageCatalog } from "./packages.ts";
import type { SessionRegistry } from "./sessions.ts";
import type { PoolStats } from "./stats.ts";
import { internalMaxLineBytes } from "../lib/worker_protocol.ts";
import type { WorkerCommand } from "./worker_command.ts";
import { type ExitInfo, WorkerDeadlineError, WorkerProcess } from "./worker_process.ts";

const HEALTH_CODE = "print('HEALTH_OK')";
const MAX_RESTART_DELAY_MS = 30_000;
/**
 * The longest the first worker boots alone (it takes 0.3-1 s): one that hangs must not hold back
 * the others until --init-timeout.
 */
const FIRST_BOOT_HEAD_START_MS = 2000;
/**
 * Request limits a worker's process serves, renewing its interpreter at each, before it is
 * replaced at the next. The memory image renews the interpreter (its Wasm memory, tables and
 * files), not what the process holds outside it (the JavaScript heaps of its two threads); a
 * worker whose memory or tables grew asks for its replacement itself, whatever the count.
 */
const RENEWALS_PER_PROCESS = 9;
/**
 * How long each step of a session move may take (the export, the import), and a renewal, which
 * parks the same sessions (compressing them past --max-parked-mb): seconds for a few hundred MB.
 */
const SESSIONS_STEP_MS = 30_000;
/** How often the autoscaling policy looks at the pool, when it is on. */
const SCALE_CHECK_MS = 100;

/** What the workers' keeper needs of the rest of the pool. */
export interface LifecycleContext {
  config: Config;
  stats: PoolStats;
  sessions: SessionRegistry;
  packages: PackageCatalog;
  /** Hands queued work to free workers: called whenever a worker may have become free. */
  dispatch: () => void;
  /** When the oldest queued request arrived (ms, monotonic); undefined when none waits. */
  oldestQueuedAt: () => number | undefined;
}

export class WorkerLifecycle {
  #workers = new Map<string, WorkerProcess>();
  #workerNumber = 0;
  #startFailures = 0;
  #restartTimers = new Set<ReturnType<typeof setTimeout>>();
  #healthTimer: ReturnType<typeof setInterval> | undefined;
  /** Runs the autoscaling policy; only when --max-workers exceeds --min-workers. */
  #scaleTimer: ReturnType<typeof setInterval> | undefined;
  /** Set by stopChecks(), when shutdown starts. */
  #checksStopped = false;
  /** True once the pool stops for good: no more spawns or restarts. */
  #closing = false;
  /** Set by start(), once the snapshot is known: no worker starts before. */
  #command: WorkerCommand | undefined;
  #log = logger("pool");

  constructor(private readonly context: LifecycleContext) {}

  /** The workers alive or starting, in the order they were spawned. */
  values(): IterableIterator<WorkerProcess> {
    return this.#workers.values();
  }

  get(id: string): WorkerProcess | undefined {
    return this.#workers.get(id);
  }

  get size(): number {
    return this.#workers.size;
  }

  /** The pool is stopping for good: a worker's exit now is its doing. */
  get closing(): boolean {
    return this.#closing;
  }

  /** Workers may start from now on, with this command line. */
  useCommand(command: WorkerCommand): void {
    this.#command = command;
  }

  /**
   * Starts the warm workers and, once they are ready or failed, the autoscaler and the health
   * checks. `started`: when the pool's start began (its log counts the snapshot's preparation).
   */
  async start(started: number): Promise<void> {
    const { config } = this.context;
    // The first worker boots alone, the others once it is ready or failed, or after
    // FIRST_BOOT_HEAD_START_MS if it is slow: booting at once, they share the cores, and the first
    // answer waits for the slowest boot's share of them.
    const first = this.#spawn();
    let headStart: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      first.ready.catch(() => {}),
      new Promise((resolve) => headStart = setTimeout(resolve, FIRST_BOOT_HEAD_START_MS)),
    ]);
    clearTimeout(headStart);
    // A shutdown that began meanwhile wants no more workers.
    if (this.#closing || this.#checksStopped) return;
    const workers = [
      first,
      ...Array.from({ length: Math.max(0, config.minWorkers - 1) }, () => this.#spawn()),
    ];
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
    if (config.maxWorkers > config.minWorkers) {
      this.#scaleTimer = setInterval(() => this.#autoscale(), SCALE_CHECK_MS);
    }
    if (config.healthCheckInterval > 0) {
      this.#healthTimer = setInterval(
        () => this.#healthCheck(),
        config.healthCheckInterval * 1000,
      );
    }
  }

  /** No more health checks or scaling: the pool is shutting down. */
  stopChecks(): void {
    this.#checksStopped = true;
    clearInterval(this.#healthTimer);
    clearInterval(this.#scaleTimer);
  }

  /** Stops for good: no more restarts; every worker is asked to leave. */
  async close(): Promise<void> {
    this.#closing = true;
    for (const timer of this.#restartTimers) clearTimeout(timer);
    await Promise.all([...this.#workers.values()].map((w) => w.close()));
  }

  /** Fresh-worker mode: one new worker per waiting request, up to the pool size. */
  spawnFresh(waiting: number): void {
    if (this.#closing || !this.#command) return;
    const starting = [...this.#workers.values()].filter((w) => w.state === "starting").length;
    if (starting < waiting && this.#workers.size < this.context.config.poolSize) this.#spawn();
  }

  /**
   * A worker back to idle after a request: a retiring one leaves, one at its request limit is
   * renewed or recycled.
   */
  afterRequest(worker: WorkerProcess): void {
    if (worker.retiring) {
      this.#retire(worker);
    } else if (worker.servedSinceRenewal >= worker.options.requestLimit) {
      this.#renewOrRecycle(worker);
    }
  }

  /**
   * A worker at its request limit. With a memory image its interpreter is put back to it in
   * place (milliseconds, against a replacement's boot of about a second of one core, taken from
   * the workers serving); without one (`--isolation none`), and after RENEWALS_PER_PROCESS
   * renewals, the worker is recycled.
   */
  #renewOrRecycle(worker: WorkerProcess): void {
    const { config, stats } = this.context;
    if (
      !config.usePool || config.isolation === "none" || worker.renewals >= RENEWALS_PER_PROCESS
    ) {
      return this.#recycle(worker, "recycled");
    }
    // A replacement is on its way already (the worker asked for it).
    if (worker.recycling) return;
    worker.startWork("renewing");
    // Not the health check's timeout: the renewal parks the live session, as a move would.
    const timeoutMs = Math.max(config.healthCheckTimeout * 1000, SESSIONS_STEP_MS);
    worker.call("renew", {}, timeoutMs)
      .then(({ restore_ms }) => {
        worker.countRenewal();
        stats.resets.add("renewal");
        stats.reset.recordMs(restore_ms);
      })
      .catch((error) => {
        if (worker.exitInfo) return; // Its exit brings a replacement.
        this.#log.warn("worker {id} could not renew its interpreter: {error}", {
          id: worker.id,
          error: String(error),
        });
        if (error instanceof WorkerDeadlineError) worker.kill("unresponsive", error.message);
        else this.#recycle(worker, "recycled");
      })
      .finally(() => {
        this.#workDone(worker);
        this.context.dispatch();
      });
  }

  #spawn(replaces?: WorkerProcess): WorkerProcess {
    const { config, sessions } = this.context;
    const id = `w${++this.#workerNumber}`;
    const limit = config.usePool ? jitter(config.workerRequestLimit) : 1;
    const worker = new WorkerProcess(id, this.#command!, {
      initTimeoutMs: config.initTimeout * 1000,
      // Worker lines may be larger than the client's (results with base64 states and files).
      maxLineBytes: internalMaxLineBytes(config),
      requestLimit: limit,
    });
    this.#workers.set(id, worker);
    this.#log.debug("spawned worker {id} (pid {pid})", { id, pid: worker.pid });
    worker.onNotification = ({ method, params }) => {
      if (method === "idle") return this.context.stats.recordAfterWork(params);
      if (method === "sessions_lost") return sessions.lose(params.session_ids, id, params.reason);
      if (method !== "recycle") return;
      this.#log.info("worker {id} asks to be replaced: {params}", {
        id,
        params: JSON.stringify(params),
      });
      // A tainted worker must not run another request, even before its replacement is up.
      if (params.reason === "tainted") worker.retire();
      this.#recycle(worker, params.reason);
    };
    worker.ready.then(async () => {
      this.#startFailures = 0;
      await this.#preload(worker);
      if (replaces) {
        this.#log.info("worker {id} replaces {old}", { id, old: replaces.id });
        replaces.handOver(worker);
        this.#leaveWhenIdle(replaces);
      }
      this.context.dispatch();
    }, () => {
      replaces?.recyclingFailed();
      // A retiring worker (tainted) must not wait for a successor that will not come: it
      // leaves, and the failed start's exit brings a new worker (with the restart backoff).
      if (replaces?.retiring) this.#leaveWhenIdle(replaces);
    });
    worker.exited.then((exit) => this.#onExit(worker, exit));
    return worker;
  }

  /** Replaces a worker on purpose: the replacement starts first, this one serves until then. */
  #recycle(worker: WorkerProcess, reason: string): void {
    if (!this.context.config.usePool) return this.#retire(worker);
    if (this.#closing || !worker.startRecycling()) return;
    this.context.stats.restarts.add(reason);
    this.#spawn(worker);
  }

  /** No more work for this worker; it leaves when idle. */
  #retire(worker: WorkerProcess): void {
    worker.retire();
    this.#leaveWhenIdle(worker);
  }

  #leaveWhenIdle(worker: WorkerProcess): void {
    if (worker.state === "idle") this.#leave(worker);
  }

  /**
   * The end of the lifecycle's own work on a worker (a preload, a health check): one retired
   * meanwhile (its successor became ready) leaves now, as after a request.
   */
  #workDone(worker: WorkerProcess): void {
    if (worker.finishWork() && worker.retiring) this.#leave(worker);
  }

  /** An idle retiring worker leaves; its sessions move to its successor first, if it has one. */
  async #leave(worker: WorkerProcess): Promise<void> {
    const { sessions } = this.context;
    worker.startWork("leaving");
    const successor = worker.successor;
    if (successor && sessions.idsOn(worker.id).length > 0) {
      try {
        // A session moves pickled (`--isolation none`, which reports the names it dropped) or
        // as its memory image (which drops nothing).
        const { sessions: moving } = await worker.call("export_sessions", {}, SESSIONS_STEP_MS);
        const { failed } = await successor.call(
          "import_sessions",
          { sessions: moving },
          SESSIONS_STEP_MS,
        );
        const dropped = Object.fromEntries(
          Object.entries(moving).map(([id, entry]) => [id, entry.dropped ?? []]),
        );
        sessions.move(worker.id, successor.id, dropped, failed);
        // Those forgotten meanwhile (expired while the move waited for the successor) must not
        // stay there: a new session of the same id would resume them.
        const kept = new Set(sessions.idsOn(successor.id));
        for (const id of Object.keys(moving)) {
          if (id in failed || kept.has(id)) continue;
          successor.call("drop_session", { session_id: id }, SESSIONS_STEP_MS).catch(() => {});
        }
        this.#log.info("moved {n} sessions from {old} to {new}", {
          n: Object.keys(moving).length,
          old: worker.id,
          new: successor.id,
        });
      } catch (error) {
        const why = messageOf(error);
        this.#log.warn("could not move the sessions of {id}: {error}", {
          id: worker.id,
          error: why,
        });
        sessions.loseWorker(
          worker.id,
          `could not move when worker ${worker.id} was replaced: ${why}`,
        );
      }
    }
    await worker.close();
    this.context.dispatch();
  }

  /** Loads the pool-wide packages into a new worker before it takes work. */
  async #preload(worker: WorkerProcess): Promise<void> {
    const { config } = this.context;
    const packages = this.context.packages.loaded;
    if (packages.length === 0 || worker.state !== "idle") return;
    worker.startWork("preload");
    try {
      const result = await worker.call(
        "execute",
        { code: "pass", packages, timeout_ms: config.initTimeout * 1000 },
        config.initTimeout * 1000,
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
      this.#workDone(worker);
    }
  }

  #onExit(worker: WorkerProcess, exit: ExitInfo): void {
    const { config, stats } = this.context;
    this.#workers.delete(worker.id);
    // Sessions still here (none after a successful move) died with the process.
    this.context.sessions.loseWorker(
      worker.id,
      `was lost when worker ${worker.id} exited (${exit.reason ?? `code ${exit.code}`})`,
    );
    if (this.#closing || worker.retiring) {
      this.#log.debug("worker {id} left (code {code})", { id: worker.id, code: exit.code });
      // In fresh-worker mode its place may be what a queued request waits for.
      return this.context.dispatch();
    }
    const neverReady = worker.readyInfo === undefined;
    const reason = exit.reason ?? (neverReady ? "failed to start" : "crashed");
    this.#log.warn("worker {id} exited unexpectedly: code {code}, signal {signal}, {reason}", {
      id: worker.id,
      code: exit.code,
      signal: exit.signal,
      reason,
    });
    if (!config.usePool) {
      this.context.dispatch();
      return;
    }
    stats.restarts.add(neverReady ? "start_failed" : exit.reason ?? "crashed");
    // Its replacement is starting already (it reached its limit, or asked for one): another
    // would make two workers of one. If that one fails to start, its own exit brings the next.
    if (worker.recycling) return this.context.dispatch();
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
    if (this.#closing || this.#checksStopped) return;
    const { config, sessions, stats } = this.context;
    const now = performance.now();
    const oldest = this.context.oldestQueuedAt();
    const decision = decideScale({
      workers: [...this.#workers.values()].map((w) => ({
        id: w.id,
        state: w.state,
        leaving: w.retiring || w.recycling,
        idleMs: now - Math.max(w.lastUsedAt, w.spawnedAt + (w.startupMs ?? 0)),
        sessions: sessions.countOn(w.id),
      })),
      oldestWaitMs: oldest === undefined ? undefined : now - oldest,
      minWorkers: config.minWorkers,
      maxWorkers: config.maxWorkers,
      scaleUpWaitMs: config.scaleUpWaitMs,
      scaleDownIdleMs: config.scaleDownIdle * 1000,
    });
    if (decision.action === "none") return;
    stats.scaling.add(decision.action === "grow" ? "up" : "down");
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
      worker.startWork("health_check");
      const timeoutMs = this.context.config.healthCheckTimeout * 1000;
      worker.call("execute", { code: HEALTH_CODE, timeout_ms: timeoutMs }, timeoutMs)
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
          this.#workDone(worker);
          this.context.dispatch();
        });
    }
  }
}

/** Spreads recycling: a limit within 10% below the configured one. */
function jitter(limit: number): number {
  return Math.max(1, limit - Math.floor(Math.random() * Math.ceil(limit * 0.1)));
}
