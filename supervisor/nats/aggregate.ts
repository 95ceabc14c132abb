/**
 * A gateway's `health` and `stats`: the instances' own reports, put together into the shapes
 * a local pool answers (lib/protocol.ts), so that every client reads them unchanged, with one
 * row per instance beside them. Pure functions, over what the instances answered.
 *
 * @module
 */

import type {
  GatewayCounters,
  HealthReport,
  InstanceHealth,
  LatencySummary,
  StatsReport,
} from "../../lib/protocol.ts";

/** An instance's report, or why there is none. */
export type Fetched<T> = { instance_id: string; report: T } | {
  instance_id: string;
  error: string;
};

/** What the gateway adds of its own. */
export interface GatewayHealth {
  accepting: boolean;
  /** Requests waiting in the gateway for a free worker. */
  queueDepth: number;
  /** The gateway's requests running on each instance. */
  inFlight: (instanceId: string) => number;
}

/**
 * The gateway's `health`: `ok` when every instance answered and is `ok`, `degraded` when some
 * workers are ready but not all is well, `unavailable` when none is.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { gatewayHealth } from "./aggregate.ts";
 * const health = gatewayHealth([{ instance_id: "i1", error: "no answer" }], {
 *   accepting: true, queueDepth: 0, inFlight: () => 0,
 * });
 * assert.equal(health.status, "unavailable");
 * assert.equal(health.instances?.[0].status, "unreachable");
 * ```
 */
export function gatewayHealth(
  fetched: Fetched<HealthReport>[],
  gateway: GatewayHealth,
): HealthReport {
  const reports = fetched.flatMap((f) => "report" in f ? [f.report] : []);
  const sum = (field: "ready_workers" | "pool_size" | "min_workers" | "max_workers") =>
    reports.reduce((total, report) => total + report[field], 0);
  const instances = fetched.map((f): InstanceHealth =>
    "report" in f
      ? {
        instance_id: f.instance_id,
        status: f.report.status,
        ready_workers: f.report.ready_workers,
        pool_size: f.report.pool_size,
        queue_depth: f.report.queue_depth,
        in_flight: gateway.inFlight(f.instance_id),
      }
      : {
        instance_id: f.instance_id,
        status: "unreachable",
        ready_workers: 0,
        pool_size: 0,
        queue_depth: 0,
        in_flight: gateway.inFlight(f.instance_id),
        error: f.error,
      }
  );
  const ready = sum("ready_workers");
  const allOk = instances.length > 0 && instances.every((i) => i.status === "ok");
  return {
    status: !gateway.accepting
      ? "shutting_down"
      : ready === 0
      ? "unavailable"
      : allOk
      ? "ok"
      : "degraded",
    ready_workers: ready,
    pool_size: sum("pool_size"),
    min_workers: sum("min_workers"),
    max_workers: sum("max_workers"),
    use_pool: true,
    queue_depth: gateway.queueDepth + reports.reduce((total, r) => total + r.queue_depth, 0),
    workers: fetched.flatMap((f) =>
      "report" in f ? f.report.workers.map((w) => ({ ...w, instance_id: f.instance_id })) : []
    ),
    instances,
  };
}

/** What the gateway measured itself, for its `stats`. */
export interface GatewayStats {
  uptimeMs: number;
  requests: Record<string, number>;
  requestsTotal: number;
  /** From arrival at the gateway to acceptance by an instance. */
  wait: LatencySummary;
  /** From acceptance to the answer. */
  run: LatencySummary;
  counters: GatewayCounters;
  isolation: StatsReport["isolation"];
}

/** Adds counts by name. */
function sumCounts(records: Record<string, number>[]): Record<string, number> {
  const total: Record<string, number> = {};
  for (const record of records) {
    for (const [name, count] of Object.entries(record)) total[name] = (total[name] ?? 0) + count;
  }
  return total;
}

/**
 * Summaries of one histogram taken on several instances: counts add up, the mean is weighted,
 * and each percentile is the highest instance's (an upper bound: percentiles do not add).
 */
export function mergeLatency(summaries: LatencySummary[]): LatencySummary {
  const count = summaries.reduce((total, s) => total + s.count, 0);
  const max = (field: keyof LatencySummary) => Math.max(0, ...summaries.map((s) => s[field]));
  return {
    count,
    mean_ms: count === 0
      ? 0
      : Math.round(summaries.reduce((t, s) => t + s.mean_ms * s.count, 0) / count * 1000) / 1000,
    p50_ms: max("p50_ms"),
    p90_ms: max("p90_ms"),
    p99_ms: max("p99_ms"),
    max_ms: max("max_ms"),
  };
}

/**
 * The gateway's `stats`: its own request counts and latencies (what its clients saw), the
 * instances' worker figures added up, and each instance's own report in `instances`.
 */
export function gatewayStats(fetched: Fetched<StatsReport>[], own: GatewayStats): StatsReport {
  const reports = fetched.flatMap((f) => "report" in f ? [f.report] : []);
  const sum = (field: "queue_depth" | "busy_workers" | "idle_workers") =>
    reports.reduce((total, report) => total + report[field], 0);
  const workers = reports.reduce((total, r) => total + r.workers.length, 0);
  return {
    uptime_ms: Math.round(own.uptimeMs),
    requests: own.requests,
    requests_total: own.requestsTotal,
    restarts: sumCounts(reports.map((r) => r.restarts)),
    scaling: sumCounts(reports.map((r) => r.scaling)),
    queue_depth: own.counters.queue_depth + sum("queue_depth"),
    busy_workers: sum("busy_workers"),
    idle_workers: sum("idle_workers"),
    utilization: workers === 0
      ? 0
      : reports.reduce((total, r) => total + r.utilization * r.workers.length, 0) / workers,
    wait: own.wait,
    run: own.run,
    isolation: reports[0]?.isolation ?? own.isolation,
    resets: sumCounts(reports.map((r) => r.resets)),
    recoveries: sumCounts(reports.map((r) => r.recoveries)),
    reset: mergeLatency(reports.map((r) => r.reset)),
    park: mergeLatency(reports.map((r) => r.park)),
    resume: mergeLatency(reports.map((r) => r.resume)),
    supervisor_rss_bytes: Deno.memoryUsage().rss,
    workers: fetched.flatMap((f) =>
      "report" in f ? f.report.workers.map((w) => ({ ...w, instance_id: f.instance_id })) : []
    ),
    gateway: own.counters,
    instances: fetched.map((f) =>
      "report" in f
        ? { ...f.report, instance_id: f.instance_id }
        : { instance_id: f.instance_id, error: f.error }
    ),
  };
}
