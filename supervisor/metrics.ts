/**
 * The pool's numbers over HTTP on 127.0.0.1 (`--metrics-port`): `/metrics` in Prometheus text
 * format (prom-client) and `/health` as JSON, 200 when healthy and 503 otherwise. main.ts loads
 * this module only when the port is set.
 *
 * Counters and gauges are read from the pool at each scrape (`stats` is the one source of
 * truth); the latency histograms are observed as requests finish, since Prometheus needs
 * buckets rather than percentiles.
 *
 * @module
 */

import { Counter, Gauge, Histogram, Registry } from "prom-client";
import { logger } from "../lib/logging.ts";
import type { Pool } from "./pool.ts";

const log = logger("metrics");

/** Latency buckets in seconds: from a warm trivial run (about 1 ms) to long runs. */
const BUCKETS = [
  0.0005,
  0.001,
  0.0025,
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
  30,
];

/** What a scrape reads: the registry, and the refresh that brings it up to date. */
export interface PoolMetrics {
  registry: Registry;
  refresh(): Promise<void>;
}

const built = new WeakMap<Pool, PoolMetrics>();

/**
 * The registry for `pool`; its numbers are refreshed by `refresh()` before a scrape. One per
 * pool, for `--metrics-port` and `--http` alike: the histograms are fed by the pool's one
 * `onRecord` hook each, which a second registry would take from the first.
 */
export function poolMetrics(pool: Pool): PoolMetrics {
  let metrics = built.get(pool);
  if (metrics === undefined) {
    metrics = buildMetrics(pool);
    built.set(pool, metrics);
  }
  return metrics;
}

function buildMetrics(pool: Pool): PoolMetrics {
  const registry = new Registry();
  const registers = [registry];
  const counter = (name: string, help: string, label: string) =>
    new Counter({ name: `pyodide_pool_${name}`, help, labelNames: [label], registers });
  const gauge = (name: string, help: string, labelNames: string[] = []) =>
    new Gauge({ name: `pyodide_pool_${name}`, help, labelNames, registers });
  const requests = counter(
    "requests_total",
    "Finished execute requests by outcome: a result status or an error name.",
    "status",
  );
  const restarts = counter("worker_restarts_total", "Worker replacements by reason.", "reason");
  const scaling = counter("scaling_steps_total", "Autoscaling steps, up or down.", "direction");
  const resets = counter(
    "resets_total",
    "Interpreter resets by kind: image (the memory image put back) or python (Python-level) " +
      "between requests, renewal (the image put back at a worker's request limit).",
    "kind",
  );
  const recoveries = counter(
    "recoveries_total",
    "Interpreters put back in place after they crashed or exited, by how they ended.",
    "kind",
  );
  const queueDepth = gauge("queue_depth", "Requests waiting for a worker.");
  const workers = gauge("workers", "Worker processes by state.", ["state"]);
  const heap = gauge("worker_heap_bytes", "Wasm heap of each worker.", ["worker"]);
  const rss = gauge("worker_rss_bytes", "Resident memory of each worker process.", ["worker"]);
  const parked = gauge(
    "worker_parked_bytes",
    "Bytes of parked session images each worker holds.",
    ["worker"],
  );
  const fsBytes = gauge(
    "worker_fs_bytes",
    "Bytes of files each worker's in-memory file system holds beyond its pristine interpreter's.",
    ["worker"],
  );
  const supervisorRss = gauge("supervisor_rss_bytes", "Resident memory of the supervisor.");
  const histogram = (name: string, help: string) =>
    new Histogram({ name: `pyodide_pool_${name}`, help, buckets: BUCKETS, registers });
  const wait = histogram("wait_seconds", "Time from a request's arrival to the start of its run.");
  const run = histogram("run_seconds", "Time a worker took for a request, as the pool sees it.");
  const reset = histogram(
    "reset_seconds",
    "Time a worker took to reset between requests (image put back, or Python-level).",
  );
  const park = histogram("park_seconds", "Time to park a session before another owner's run.");
  const resume = histogram("resume_seconds", "Time to resume a parked session before its run.");
  pool.stats.wait.onRecord = (ms) => wait.observe(ms / 1000);
  pool.stats.run.onRecord = (ms) => run.observe(ms / 1000);
  pool.stats.reset.onRecord = (ms) => reset.observe(ms / 1000);
  pool.stats.park.onRecord = (ms) => park.observe(ms / 1000);
  pool.stats.resume.onRecord = (ms) => resume.observe(ms / 1000);

  /** Sets a labelled counter to the pool's own count for each label. */
  const mirror = (metric: Counter, counts: Record<string, number>, label: string) => {
    metric.reset();
    for (const [name, count] of Object.entries(counts)) metric.inc({ [label]: name }, count);
  };

  return {
    registry,
    async refresh() {
      const stats = await pool.statsReport();
      mirror(requests, stats.requests, "status");
      mirror(restarts, stats.restarts, "reason");
      mirror(scaling, stats.scaling, "direction");
      mirror(resets, stats.resets, "kind");
      mirror(recoveries, stats.recoveries, "kind");
      queueDepth.set(stats.queue_depth);
      workers.reset();
      for (const worker of stats.workers) workers.inc({ state: worker.state });
      heap.reset();
      rss.reset();
      parked.reset();
      fsBytes.reset();
      for (const worker of stats.workers) {
        if (worker.heap_bytes !== undefined) heap.set({ worker: worker.id }, worker.heap_bytes);
        if (worker.rss_bytes !== undefined) rss.set({ worker: worker.id }, worker.rss_bytes);
        if (worker.parked_bytes !== undefined) {
          parked.set({ worker: worker.id }, worker.parked_bytes);
        }
        if (worker.fs_bytes !== undefined) fsBytes.set({ worker: worker.id }, worker.fs_bytes);
      }
      supervisorRss.set(stats.supervisor_rss_bytes);
    },
  };
}

/** Serves `/metrics` and `/health` on 127.0.0.1:`port` (0: any free port). */
export function serveMetrics(pool: Pool, port: number): Deno.HttpServer<Deno.NetAddr> {
  const { registry, refresh } = poolMetrics(pool);
  return Deno.serve({
    hostname: "127.0.0.1",
    port,
    onListen: ({ hostname, port }) =>
      log.info("metrics on http://{hostname}:{port}/metrics, health on /health", {
        hostname,
        port,
      }),
  }, async (request) => {
    const { pathname } = new URL(request.url);
    if (request.method !== "GET") return new Response("only GET\n", { status: 405 });
    if (pathname === "/metrics") {
      await refresh();
      return new Response(await registry.metrics(), {
        headers: { "content-type": registry.contentType },
      });
    }
    if (pathname === "/health") {
      const health = pool.health();
      // Degraded still serves; unavailable and shutting down do not.
      const serving = health.status === "ok" || health.status === "degraded";
      return Response.json(health, { status: serving ? 200 : 503 });
    }
    return new Response("not found: try /metrics or /health\n", { status: 404 });
  });
}
