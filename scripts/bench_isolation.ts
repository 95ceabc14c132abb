/**
 * The isolation modes side by side (issue 13): three pools, one per `--isolation` mode, measured
 * in interleaved rounds on the same host, so that the host's drift from minute to minute falls
 * on all of them alike; then sessions parked and resumed at several image sizes.
 *
 * @module
 */

import type { LatencySummary, StatsReport } from "../lib/protocol.ts";
import { Supervisor } from "../tests/helpers/supervisor_process.ts";
import { Int32Histogram } from "../supervisor/stats.ts";

export const MODES = ["none", "request", "tenant"] as const;
export type Mode = typeof MODES[number];

const TRIVIAL = { code: "x = 1 + 1" };

export interface ModeReport {
  mode: Mode;
  p50_ms: number;
  p99_ms: number;
  requests_per_second: number;
  /** The after-work per request: the image put back, or the Python-level reset. */
  reset_mean_ms: number;
  reset_p50_ms: number;
  resets: Record<string, number>;
}

export interface SessionReport {
  /** What the session holds: a bytes object of this many MiB. */
  data_mib: number;
  /** Bytes its parked image holds. */
  image_mib: number;
  park_ms: number;
  resume_ms: number;
  /** Growth of the worker's resident memory when the session was parked. */
  rss_growth_mib: number;
}

function histogram() {
  return new Int32Histogram(1, 600_000_000, 3);
}

type Histogram = ReturnType<typeof histogram>;

const start = (mode: Mode, size: number) =>
  Supervisor.start({
    args: [
      "--pool-size",
      String(size),
      "--isolation",
      mode,
      "--worker-request-limit",
      "100000",
      "--log-level",
      "warning",
    ],
  });

/**
 * The request each mode runs: in `tenant` mode, all of one tenant (the cheap path, which is
 * what that mode is for); in the others, requests of no one.
 */
const requestOf = (mode: Mode) => mode === "tenant" ? { ...TRIVIAL, tenant: "batch" } : TRIVIAL;

async function sequential(pool: Supervisor, mode: Mode, count: number, into: Histogram) {
  for (let i = 0; i < count; i++) {
    const t0 = performance.now();
    const r = await pool.execute(requestOf(mode));
    into.recordValue(Math.round((performance.now() - t0) * 1000));
    if (r.status !== "ok") throw new Error(`unexpected result ${JSON.stringify(r)}`);
  }
}

async function pipelined(pool: Supervisor, mode: Mode, count: number, window: number) {
  let sent = 0;
  const t0 = performance.now();
  const lane = async () => {
    while (sent < count) {
      sent++;
      const r = await pool.execute(requestOf(mode));
      if (r.status !== "ok") throw new Error(`unexpected result ${JSON.stringify(r)}`);
    }
  };
  await Promise.all(Array.from({ length: window }, lane));
  return (performance.now() - t0) / 1000;
}

/** Waits until every request's after-work is reported in the pool's stats. */
async function settledStats(pool: Supervisor, resets: number): Promise<StatsReport> {
  for (let tries = 0;; tries++) {
    const stats = await pool.stats();
    const done = Object.values(stats.resets).reduce((a, b) => a + b, 0);
    if (done >= resets || tries > 50) return stats;
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Latency, throughput and reset cost of each mode, measured in interleaved rounds. */
export async function compareModes(
  { rounds, sequentialPerRound, pipelinedPerRound, progress }: {
    rounds: number;
    sequentialPerRound: number;
    pipelinedPerRound: number;
    progress: (message: string) => void;
  },
): Promise<ModeReport[]> {
  progress("starting a pool of 2 workers per isolation mode");
  const pools = new Map<Mode, Supervisor>();
  for (const mode of MODES) pools.set(mode, await start(mode, 2));
  const latency = new Map(MODES.map((mode) => [mode, histogram()]));
  const busy = new Map(MODES.map((mode) => [mode, { requests: 0, seconds: 0 }]));
  try {
    for (const mode of MODES) await sequential(pools.get(mode)!, mode, 200, histogram());
    for (let round = 0; round < rounds; round++) {
      progress(`isolation modes, round ${round + 1} of ${rounds}`);
      // Each round in another order, so that no mode always follows the same one.
      const order = MODES.map((_, i) => MODES[(i + round) % MODES.length]);
      for (const mode of order) {
        const pool = pools.get(mode)!;
        await sequential(pool, mode, sequentialPerRound, latency.get(mode)!);
        const seconds = await pipelined(pool, mode, pipelinedPerRound, 32);
        const total = busy.get(mode)!;
        total.requests += pipelinedPerRound;
        total.seconds += seconds;
      }
    }
    const reports: ModeReport[] = [];
    for (const mode of MODES) {
      const pool = pools.get(mode)!;
      const sent = 200 + rounds * (sequentialPerRound + pipelinedPerRound);
      const stats = await settledStats(pool, sent);
      const h = latency.get(mode)!;
      const { requests, seconds } = busy.get(mode)!;
      reports.push({
        mode,
        p50_ms: h.getValueAtPercentile(50) / 1000,
        p99_ms: h.getValueAtPercentile(99) / 1000,
        requests_per_second: requests / seconds,
        reset_mean_ms: stats.reset.mean_ms,
        reset_p50_ms: stats.reset.p50_ms,
        resets: stats.resets,
      });
    }
    return reports;
  } finally {
    for (const pool of pools.values()) await pool.close();
  }
}

/** Resident memory of a process, from its own stats. */
async function workerRss(pool: Supervisor): Promise<number> {
  const stats = await pool.stats();
  return stats.workers[0].rss_bytes ?? NaN;
}

/** Waits for the pool's count of `kind` (park or resume) to reach `count`; the new mean. */
async function eventMs(
  pool: Supervisor,
  kind: "park" | "resume",
  before: LatencySummary,
  added: number,
): Promise<number> {
  for (let tries = 0;; tries++) {
    const stats = await pool.stats();
    const now = stats[kind];
    if (now.count >= before.count + added || tries > 50) {
      const sum = now.mean_ms * now.count - before.mean_ms * before.count;
      return sum / (now.count - before.count);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * Park and resume times against the size of the session's image: a session holding `data_mib`
 * MiB of data is parked by a request of no one and resumed by its own, `cycles` times.
 */
export async function sessionsBySize(
  sizesMib: number[],
  cycles: number,
  progress: (message: string) => void,
): Promise<SessionReport[]> {
  progress("sessions: park and resume by image size");
  const pool = await start("request", 1);
  const reports: SessionReport[] = [];
  try {
    for (const size of sizesMib) {
      const session = `bench-${size}`;
      // Data that differs page by page from the image (zero pages would cost nothing).
      const fill = `data = bytes(range(256)) * ${(size << 20) / 256}`;
      await pool.execute({ code: fill, session_id: session });
      const rssBefore = await workerRss(pool);
      let stats = await pool.stats();
      let parkBefore = stats.park;
      const parkedBefore = stats.workers[0].parked_bytes ?? 0;
      await pool.execute(TRIVIAL);
      const firstPark = await eventMs(pool, "park", parkBefore, 1);
      stats = await pool.stats();
      const image = (stats.workers[0].parked_bytes ?? 0) - parkedBefore;
      const rssGrowth = await workerRss(pool) - rssBefore;
      const parks = [firstPark];
      const resumes: number[] = [];
      for (let i = 0; i < cycles; i++) {
        const resumeBefore = (await pool.stats()).resume;
        await pool.execute({ code: "len(data)", session_id: session });
        resumes.push(await eventMs(pool, "resume", resumeBefore, 1));
        parkBefore = (await pool.stats()).park;
        await pool.execute(TRIVIAL);
        parks.push(await eventMs(pool, "park", parkBefore, 1));
      }
      const median = (values: number[]) =>
        values.sort((a, b) => a - b)[Math.floor(values.length / 2)];
      reports.push({
        data_mib: size,
        image_mib: image / (1 << 20),
        park_ms: median(parks),
        resume_ms: median(resumes),
        rss_growth_mib: rssGrowth / (1 << 20),
      });
    }
    return reports;
  } finally {
    await pool.close();
  }
}
