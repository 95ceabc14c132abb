/**
 * The pool's benchmark: starts the real supervisor, drives it over stdio as a client, and
 * prints a table of warm latency, throughput, cold start, pool vs fresh worker, large payloads
 * and memory (issue 7's targets), then the isolation modes side by side and sessions parked and
 * resumed by image size (issue 13's targets), each target beside what this run measured, and the
 * HTTP service against stdio (bench_http.ts, issue 18).
 *
 *     deno task bench            # table on stdout
 *     deno task bench --json     # the same figures as JSON
 *
 * @module
 */

import { parseArgs } from "node:util";
import { Supervisor } from "../tests/helpers/supervisor_process.ts";
import { Int32Histogram } from "../supervisor/stats.ts";
import { encodeBase64 } from "../tests/helpers/base64.ts";
import { procStatus, statusBytes } from "../tests/helpers/processes.ts";
import { crashCosts } from "./bench_crash.ts";
import { httpVersusStdio } from "./bench_http.ts";
import { compareModes, sessionsBySize } from "./bench_isolation.ts";
import { memoryPeaks } from "./bench_memory.ts";

const { values: options } = parseArgs({
  args: Deno.args,
  options: {
    json: { type: "boolean", default: false },
    requests: { type: "string", default: "3000" },
    "throughput-requests": { type: "string", default: "10000" },
    "fresh-requests": { type: "string", default: "5" },
    "isolation-rounds": { type: "string", default: "6" },
  },
});
const TRIVIAL = { code: "x = 1 + 1" };
const progress = (message: string) => console.error(`bench: ${message}`);

function histogram() {
  return new Int32Histogram(1, 600_000_000, 3);
}

async function startPool(args: string[]) {
  const started = performance.now();
  const pool = await Supervisor.start({ args });
  const readyMs = performance.now() - started;
  const health = await pool.health();
  return {
    pool,
    readyMs,
    workerStartupMs: health.workers.map((w) => w.startup_ms ?? NaN),
    workerPids: health.workers.map((w) => w.pid),
  };
}

async function sequentialLatency(pool: Supervisor, count: number) {
  for (let i = 0; i < 200; i++) await pool.execute(TRIVIAL);
  const h = histogram();
  // The part of each request spent inside the worker process (its own duration_ms).
  const inWorker = histogram();
  for (let i = 0; i < count; i++) {
    const t0 = performance.now();
    const r = await pool.execute(TRIVIAL);
    h.recordValue(Math.round((performance.now() - t0) * 1000));
    inWorker.recordValue(Math.round(r.duration_ms * 1000));
    if (r.status !== "ok") throw new Error(`unexpected result ${JSON.stringify(r)}`);
  }
  const ms = (p: number) => h.getValueAtPercentile(p) / 1000;
  return {
    count,
    p50_ms: ms(50),
    p90_ms: ms(90),
    p99_ms: ms(99),
    max_ms: h.maxValue / 1000,
    in_worker_p50_ms: inWorker.getValueAtPercentile(50) / 1000,
  };
}

async function throughput(pool: Supervisor, count: number, window: number) {
  let sent = 0;
  const t0 = performance.now();
  const lane = async () => {
    while (sent < count) {
      sent++;
      const r = await pool.execute(TRIVIAL);
      if (r.status !== "ok") throw new Error(`unexpected result ${JSON.stringify(r)}`);
    }
  };
  await Promise.all(Array.from({ length: window }, lane));
  const seconds = (performance.now() - t0) / 1000;
  return { count, in_flight: window, seconds, requests_per_second: count / seconds };
}

/**
 * Resident memory that is the process's own (RssAnon): RSS less the file pages of the Deno
 * executable and libraries, which every process on the machine shares.
 */
function privateMb(pid: number): number {
  return statusBytes(procStatus(pid), "RssAnon") / (1 << 20);
}

/** Median seconds of `runs` calls of `once`. */
async function medianSeconds(runs: number, once: () => Promise<void>): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    await once();
    times.push((performance.now() - t0) / 1000);
  }
  return times.sort((a, b) => a - b)[Math.floor(runs / 2)];
}

/** A 10 MiB file in and a changed copy out, and 1 MB of stdout, in MB/s of payload moved. */
async function largePayloads(pool: Supervisor) {
  const size = 10 << 20;
  const content = new Uint8Array(size);
  for (let i = 0; i < size; i += 4096) content[i] = i & 0xff;
  const contentB64 = encodeBase64(content);
  const fileSeconds = await medianSeconds(3, async () => {
    const r = await pool.execute({
      code: "data = open('in.bin', 'rb').read()\nopen('out.bin', 'wb').write(data[::-1])",
      files: [{ path: "in.bin", content_b64: contentB64 }],
    });
    const out = r.files?.find((f) => f.path === "out.bin");
    if (r.status !== "ok" || out?.size !== size) {
      throw new Error(`file round trip failed: ${r.status} ${JSON.stringify(r.error)}`);
    }
  });
  const stdoutBytes = 1_000_000;
  const stdoutSeconds = await medianSeconds(5, async () => {
    const r = await pool.execute({ code: `import sys\nsys.stdout.write('x' * ${stdoutBytes})` });
    if (r.stdout.length !== stdoutBytes) {
      throw new Error(`stdout came back ${r.stdout.length} long`);
    }
  });
  const mbps = (bytes: number, seconds: number) => bytes / (1 << 20) / seconds;
  return {
    file_10mib_in_and_out_ms: fileSeconds * 1000,
    file_mb_per_s: mbps(2 * size, fileSeconds),
    stdout_1mb_ms: stdoutSeconds * 1000,
    stdout_mb_per_s: mbps(stdoutBytes, stdoutSeconds),
  };
}

async function freshWorkerLatency(count: number) {
  const { pool } = await startPool(["--pool-size", "1", "--use-pool=false"]);
  const times: number[] = [];
  for (let i = 0; i < count; i++) {
    const t0 = performance.now();
    await pool.execute(TRIVIAL);
    times.push(performance.now() - t0);
  }
  await pool.close();
  return { count, mean_ms: times.reduce((a, b) => a + b, 0) / count };
}

progress("starting a pool of 2 workers");
const warm = await startPool([
  "--pool-size",
  "2",
  "--log-level",
  "warning",
  "--worker-request-limit",
  "100000",
]);
const idleStats = await warm.pool.stats();
progress("sequential latency");
const latency = await sequentialLatency(warm.pool, Number(options.requests));
progress("pipelined throughput");
const pipelined = await throughput(warm.pool, Number(options["throughput-requests"]), 32);
// Memory before the large payloads, which grow the workers' heaps.
const stats = await warm.pool.stats();
const supervisorPrivateMb = privateMb(warm.pool.process.pid);
const workerPrivateMb = warm.workerPids.map(privateMb);
progress("large payloads");
const payloads = await largePayloads(warm.pool);
progress("isolation reset cost");
// Times the reset the runtime runs after every request (worker/python/isolation.py).
const reset = await warm.pool.execute({
  code: "import pyodide_pool_runtime as r, time\n" +
    "import os\nhere = os.getcwd()\nb = r._live['baseline']\nt = time.perf_counter()\n" +
    "for _ in range(500):\n    b.restore()\nspent = (time.perf_counter() - t) / 500 * 1e6\n" +
    // The reset removed this request's own working directory; it must exist to be collected.
    "os.makedirs(here, exist_ok=True)\nspent",
});
if (reset.status !== "ok") throw new Error(`reset timing failed: ${JSON.stringify(reset.error)}`);
const resetUs = Number(reset.result);
await warm.pool.close();
// The same burst with the default settings: workers recycle after their request limit.
progress("pipelined throughput, default settings (recycling on)");
const withDefaults = await startPool(["--pool-size", "2", "--log-level", "warning"]);
// Warmed up as the first pool was by its latency run: a fresh worker's first requests are slower.
await throughput(withDefaults.pool, 2000, 32);
const pipelinedDefaults = await throughput(
  withDefaults.pool,
  Number(options["throughput-requests"]),
  32,
);
const recycled = (await withDefaults.pool.stats()).restarts.recycled ?? 0;
await withDefaults.pool.close();
progress("cold start without the snapshot");
const plain = await startPool([
  "--pool-size",
  "1",
  "--use-snapshot=false",
  "--log-level",
  "warning",
]);
await plain.pool.close();
// A replacement after a crash or recycle starts alone, so that is the start the target names;
// the pool's first start above has both workers sharing the two cores.
progress("cold start from the snapshot, one worker alone");
const lone: number[] = [];
for (let i = 0; i < 3; i++) {
  const one = await startPool(["--pool-size", "1", "--log-level", "warning"]);
  lone.push(one.workerStartupMs[0]);
  await one.pool.close();
}
lone.sort((a, b) => a - b);
progress("fresh worker per request");
const fresh = await freshWorkerLatency(Number(options["fresh-requests"]));
const modes = await compareModes({
  rounds: Number(options["isolation-rounds"]),
  sequentialPerRound: 500,
  pipelinedPerRound: 2000,
  progress,
});
const sessions = await sessionsBySize([1, 5, 10, 25, 50], 5, progress);
const crashes = await crashCosts({ rounds: 4, progress });
const memoryLoads = await memoryPeaks(progress);
const overHttp = await httpVersusStdio({
  requests: Number(options.requests),
  throughputRequests: Number(options["throughput-requests"]),
  progress,
});

const mb = (bytes: number) => bytes / (1 << 20);
const workerRss = stats.workers.map((w) => mb(w.rss_bytes ?? NaN));
const speedup = fresh.mean_ms / latency.p50_ms;
const snapshotStartMs = lone[Math.floor(lone.length / 2)];

/** Issue 7's targets, each with what this run measured. */
const targets = [
  { name: "warm p50 (ms)", target: "<= 0.5", value: latency.p50_ms, met: latency.p50_ms <= 0.5 },
  { name: "warm p99 (ms)", target: "<= 2", value: latency.p99_ms, met: latency.p99_ms <= 2 },
  {
    name: "throughput, 2 workers (req/s)",
    target: ">= 5000",
    value: pipelined.requests_per_second,
    met: pipelined.requests_per_second >= 5000,
  },
  { name: "pool vs fresh worker", target: ">= 1000x", value: speedup, met: speedup >= 1000 },
  {
    name: "worker start from snapshot, alone (ms)",
    target: "<= 300",
    value: snapshotStartMs,
    met: snapshotStartMs <= 300,
  },
  {
    name: "idle worker RSS (MB)",
    target: "<= 160",
    value: Math.max(...workerRss),
    met: Math.max(...workerRss) <= 160,
  },
  {
    name: "supervisor RSS after load (MB)",
    target: "<= 60",
    value: mb(stats.supervisor_rss_bytes),
    met: mb(stats.supervisor_rss_bytes) <= 60,
  },
];

const byMode = Object.fromEntries(modes.map((m) => [m.mode, m]));
const resumeAtTen = Math.max(
  ...sessions.filter((s) => s.image_mib <= 10).map((s) => s.resume_ms),
);
/** Issue 13's targets, each with what this run measured. */
const isolationTargets = [
  {
    name: "request over none, warm p50 (ms)",
    target: "<= 1",
    value: byMode.request.p50_ms - byMode.none.p50_ms,
  },
  {
    name: "request / none throughput",
    target: ">= 0.5",
    value: byMode.request.requests_per_second / byMode.none.requests_per_second,
  },
  { name: "resume, image <= 10 MiB (ms)", target: "<= 5", value: resumeAtTen },
].map((t) => ({
  ...t,
  met: t.target.startsWith("<=")
    ? t.value <= Number(t.target.slice(3))
    : t.value >= Number(t.target.slice(3)),
}));

/** Issue 14's targets, each with what this run measured. */
const crashTargets = [
  {
    name: "fatal request, answer to ready again (ms)",
    target: "<= 50",
    value: crashes.recovery_in_place_ms,
    met: crashes.recovery_in_place_ms <= 50,
  },
  {
    name: "1 in 20 fatal / clean throughput",
    target: ">= 0.8",
    value: crashes.requests_per_second_one_in_20_fatal / crashes.requests_per_second_clean,
    met: crashes.requests_per_second_one_in_20_fatal / crashes.requests_per_second_clean >= 0.8,
  },
];

const report = {
  machine: { cores: navigator.hardwareConcurrency, deno: Deno.version.deno },
  warm_latency: latency,
  throughput: pipelined,
  throughput_default_settings: {
    ...pipelinedDefaults,
    recycles: recycled,
    lost_to_recycling: 1 - pipelinedDefaults.requests_per_second / pipelined.requests_per_second,
  },
  cold_start: {
    pool_ready_ms: warm.readyMs,
    worker_startup_ms: warm.workerStartupMs,
    worker_startup_alone_ms: lone,
    worker_startup_without_snapshot_ms: plain.workerStartupMs[0],
  },
  fresh_worker: { ...fresh, pool_speedup_vs_p50: speedup },
  large_payloads: payloads,
  isolation_reset_us: resetUs,
  memory: {
    supervisor_rss_idle_mb: mb(idleStats.supervisor_rss_bytes),
    supervisor_rss_mb: mb(stats.supervisor_rss_bytes),
    worker_rss_mb: workerRss,
    supervisor_private_mb: supervisorPrivateMb,
    worker_private_mb: workerPrivateMb,
    worker_heap_mb: stats.workers.map((w) => mb(w.heap_bytes ?? NaN)),
  },
  targets,
  isolation: { modes, sessions, targets: isolationTargets },
  crashes: { ...crashes, process_start_alone_ms: snapshotStartMs, targets: crashTargets },
  memory_outside_the_heap: memoryLoads,
  http: overHttp,
};

if (options.json) {
  console.log(JSON.stringify(report, null, 2));
} else {
  const f = (n: number, digits = 2) => n.toFixed(digits);
  const rows: [string, string][] = [
    [
      "warm execute p50 / p90 / p99 / max (ms)",
      `${f(latency.p50_ms, 3)} / ${f(latency.p90_ms, 3)} / ${f(latency.p99_ms, 3)} / ${
        f(latency.max_ms, 3)
      }`,
    ],
    ["  of which inside the worker, p50 (ms)", f(latency.in_worker_p50_ms, 3)],
    [
      "throughput, 2 workers, 32 in flight, recycling off (req/s)",
      f(pipelined.requests_per_second, 0),
    ],
    [
      "  the same, default settings (recycling on): req/s, recycles, lost",
      `${f(pipelinedDefaults.requests_per_second, 0)}, ${recycled}, ${
        f(100 * (1 - pipelinedDefaults.requests_per_second / pipelined.requests_per_second), 0)
      }%`,
    ],
    ["pool ready, 2 workers, the first booting alone (ms)", f(warm.readyMs, 0)],
    [
      "worker spawn to ready, snapshot, 2 at once (ms)",
      warm.workerStartupMs.map((m) => f(m, 0)).join(", "),
    ],
    ["worker spawn to ready, snapshot, alone (ms)", lone.map((m) => f(m, 0)).join(", ")],
    ["worker spawn to ready, no snapshot (ms)", f(plain.workerStartupMs[0], 0)],
    ["fresh worker per request, mean (ms)", f(fresh.mean_ms, 0)],
    ["pool speedup (fresh mean / warm p50)", `${f(speedup, 0)}x`],
    [
      "10 MiB file in and out (ms, MB/s)",
      `${f(payloads.file_10mib_in_and_out_ms, 0)}, ${f(payloads.file_mb_per_s, 1)}`,
    ],
    [
      "1 MB of stdout (ms, MB/s)",
      `${f(payloads.stdout_1mb_ms, 1)}, ${f(payloads.stdout_mb_per_s, 1)}`,
    ],
    ["isolation reset per request (us)", f(resetUs, 1)],
    [
      "supervisor RSS idle / after load (MB)",
      `${f(report.memory.supervisor_rss_idle_mb, 1)} / ${f(report.memory.supervisor_rss_mb, 1)}`,
    ],
    ["idle worker RSS (MB)", workerRss.map((m) => f(m, 1)).join(", ")],
    [
      "private resident memory, supervisor / workers (MB)",
      `${f(supervisorPrivateMb, 1)} / ${workerPrivateMb.map((m) => f(m, 1)).join(", ")}`,
    ],
    ["worker Wasm heap (MB)", report.memory.worker_heap_mb.map((m) => f(m, 1)).join(", ")],
  ];
  const width = Math.max(...rows.map(([k]) => k.length), ...targets.map((t) => t.name.length));
  console.log(`pyodide-pool bench (${report.machine.cores} cores, deno ${report.machine.deno})`);
  for (const [k, v] of rows) console.log(`${k.padEnd(width)}  ${v}`);
  const printTargets = (
    title: string,
    list: { name: string; target: string; value: number; met: boolean }[],
  ) => {
    console.log(`\n${title}`);
    for (const t of list) {
      console.log(
        `${t.name.padEnd(width)}  ${f(t.value, 2).padStart(9)}  ${t.target.padEnd(9)}  ${
          t.met ? "met" : "missed"
        }`,
      );
    }
  };
  printTargets("targets (issue 7; latency and throughput in the default mode, request)", targets);
  console.log(
    "\nisolation modes, interleaved (2 workers each; tenant: one tenant's requests)",
  );
  console.log(
    "mode      p50 ms   p99 ms   req/s   reset mean / p50 ms   resets",
  );
  for (const m of modes) {
    console.log(
      `${m.mode.padEnd(8)}  ${f(m.p50_ms, 3).padStart(6)}  ${f(m.p99_ms, 3).padStart(7)}  ${
        f(m.requests_per_second, 0).padStart(6)
      }   ${f(m.reset_mean_ms, 3).padStart(6)} / ${f(m.reset_p50_ms, 3).padEnd(10)}  ${
        JSON.stringify(m.resets)
      }`,
    );
  }
  console.log("\nsessions, --isolation request (median of 6 parks, 5 resumes)");
  console.log("data MiB   image MiB   park ms   resume ms   worker RSS growth MiB");
  for (const s of sessions) {
    console.log(
      `${String(s.data_mib).padStart(8)}   ${f(s.image_mib, 1).padStart(9)}   ${
        f(s.park_ms, 2).padStart(7)
      }   ${f(s.resume_ms, 2).padStart(9)}   ${f(s.rss_growth_mib, 1).padStart(8)}`,
    );
  }
  printTargets("targets (issue 13)", isolationTargets);
  console.log("\nfatal requests (os.abort()), one worker; mixed load: 2 workers, interleaved");
  const crashRows: [string, string][] = [
    ["answer to ready again, image put back (ms)", f(crashes.recovery_in_place_ms, 2)],
    ["  the worker's after-work, p50 (ms)", f(crashes.restore_in_worker_p50_ms, 2)],
    [
      "answer to ready again, interpreter replaced (ms)",
      f(crashes.recovery_by_interpreter_replacement_ms, 0),
    ],
    ["a process start from the snapshot, alone (ms)", f(snapshotStartMs, 0)],
    [
      "throughput clean / 1 in 20 fatal (req/s)",
      `${f(crashes.requests_per_second_clean, 0)} / ${
        f(crashes.requests_per_second_one_in_20_fatal, 0)
      }`,
    ],
  ];
  for (const [k, v] of crashRows) console.log(`${k.padEnd(width)}  ${v}`);
  printTargets("targets (issue 14)", crashTargets);
  console.log(
    `\nmemory outside the heap, a fresh worker each, --worker-max-rss-mb ${memoryLoads.ceiling_mb}`,
  );
  for (const [name, load] of Object.entries(memoryLoads.loads)) {
    console.log(
      `${`${name}: status, peak RSS before / after (MB)`.padEnd(width)}  ${load.status}, ${
        f(load.before_mb, 0)
      } / ${f(load.peak_mb, 0)}`,
    );
  }
  console.log(
    `${"one read of the resident memory (us)".padEnd(width)}  ${f(memoryLoads.rss_read_us, 1)}`,
  );
  console.log("\nHTTP (--http) and stdio, one pool of 2 workers, interleaved");
  const latencyOf = (l: { p50_ms: number; p90_ms: number; p99_ms: number }) =>
    `${f(l.p50_ms, 3)} / ${f(l.p90_ms, 3)} / ${f(l.p99_ms, 3)}`;
  const httpRows: [string, string][] = [
    ["execute over stdio, p50 / p90 / p99 (ms)", latencyOf(overHttp.stdio)],
    ["execute over HTTP keep-alive, p50 / p90 / p99 (ms)", latencyOf(overHttp.http_keep_alive)],
    [
      `throughput, ${overHttp.http_clients} HTTP clients (req/s)`,
      f(overHttp.http_requests_per_second, 0),
    ],
    [
      `throughput, ${overHttp.http_clients} in flight on stdio (req/s)`,
      f(overHttp.stdio_in_flight_requests_per_second, 0),
    ],
  ];
  for (const [k, v] of httpRows) console.log(`${k.padEnd(width)}  ${v}`);
}
