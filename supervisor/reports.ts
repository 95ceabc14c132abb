/**
 * The `health` and `stats` reports: what the pool and each worker look like, for the client,
 * the metrics endpoint and the operator. `health` never asks the workers; `stats` asks each
 * ready worker for its own figures, briefly.
 *
 * @module
 */

import type { Config } from "./config.ts";
import type { HealthReport, StatsReport, WorkerHealth, WorkerStats } from "../lib/protocol.ts";
import type { PoolApi } from "./pool_api.ts";
import type { SessionRegistry } from "./sessions.ts";
import type { PoolStats } from "./stats.ts";
import type { WorkerProcess } from "./worker_process.ts";

/**
 * What the reports are made of, read as they are made: `stats` reads the pool again once the
 * workers have answered.
 */
export interface PoolView {
  readonly config: Config;
  readonly stats: PoolStats;
  readonly sessions: SessionRegistry;
  workers(): WorkerProcess[];
  queueDepth(): number;
  /** False once shutdown started. */
  accepting(): boolean;
  /** The pool's id as an instance of a NATS service (--nats), if it is one. */
  readonly instanceId?: string;
}

/** Pool and per-worker state, without asking the workers. */
export function healthReport(pool: PoolView): HealthReport {
  const { config, sessions } = pool;
  const workers = pool.workers().map((w): WorkerHealth => ({
    id: w.id,
    pid: w.pid,
    state: w.state,
    work: w.work ?? null,
    retiring: w.retiring,
    served: w.served,
    request_limit: w.options.requestLimit,
    renewals: w.renewals,
    uptime_ms: Math.round(performance.now() - w.spawnedAt),
    startup_ms: w.startupMs === undefined ? null : Math.round(w.startupMs),
    // As the worker last reported them (when ready, and after each request).
    heap_bytes: w.memory?.heap_bytes ?? null,
    rss_bytes: w.memory?.rss_bytes ?? null,
    fs_bytes: w.memory?.fs_bytes ?? null,
    sessions: sessions.idsOn(w.id),
  }));
  const ready = workers.filter((w) => w.state === "idle" || w.state === "busy").length;
  const wanted = config.usePool ? config.minWorkers : 0;
  return {
    status: !pool.accepting()
      ? "shutting_down"
      : ready >= wanted
      ? "ok"
      : ready > 0
      ? "degraded"
      : "unavailable",
    ready_workers: ready,
    pool_size: config.poolSize,
    min_workers: config.minWorkers,
    max_workers: config.maxWorkers,
    use_pool: config.usePool,
    queue_depth: pool.queueDepth(),
    workers,
    ...(pool.instanceId === undefined ? {} : { instance_id: pool.instanceId }),
  };
}

/**
 * `report` as a client of `tenant` (an HTTP token's name) may see it: with its own sessions'
 * ids only, since another tenant's ids name its state. Unset: all of them.
 */
export function healthFor(
  report: HealthReport,
  tenant: string | undefined,
  pool: Pick<PoolApi, "ownsSession">,
): HealthReport {
  if (tenant === undefined) return report;
  return {
    ...report,
    workers: report.workers.map((worker) => ({
      ...worker,
      sessions: worker.sessions.filter((id) => pool.ownsSession(id, tenant)),
    })),
  };
}

/** Counters, latency percentiles and per-worker memory (asked of each worker, briefly). */
export async function statsReport(pool: PoolView): Promise<StatsReport> {
  const { stats } = pool;
  const uptimeMs = performance.now() - stats.startedAt;
  const workers = await Promise.all(
    pool.workers().map(async (w): Promise<WorkerStats> => {
      const base = { id: w.id, state: w.state, served: w.served };
      if (w.state !== "idle" && w.state !== "busy") return base;
      try {
        return { ...base, ...(await w.call("stats", {}, 1000)) };
      } catch (error) {
        return { ...base, error: String(error) };
      }
    }),
  );
  const busy = pool.workers().filter((w) => w.state === "busy").length;
  return {
    uptime_ms: Math.round(uptimeMs),
    requests: stats.requests.toJSON(),
    requests_total: stats.requests.total,
    restarts: stats.restarts.toJSON(),
    scaling: stats.scaling.toJSON(),
    queue_depth: pool.queueDepth(),
    busy_workers: busy,
    idle_workers: pool.workers().filter((w) => w.state === "idle").length,
    utilization: pool.workers().length
      ? Math.min(1, stats.busyMs / (uptimeMs * pool.workers().length))
      : 0,
    wait: stats.wait.summary(),
    run: stats.run.summary(),
    isolation: pool.config.isolation,
    resets: stats.resets.toJSON(),
    recoveries: stats.recoveries.toJSON(),
    reset: stats.reset.summary(),
    park: stats.park.summary(),
    resume: stats.resume.summary(),
    supervisor_rss_bytes: Deno.memoryUsage().rss,
    workers,
    ...(pool.instanceId === undefined ? {} : { instance_id: pool.instanceId }),
  };
}
