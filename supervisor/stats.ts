/**
 * The pool's counters and latency histograms, as `stats` reports them.
 *
 * @module
 */

// The module itself, not the package index: the index loads a WebAssembly build and a
// compression library that would add about 25 MB to the supervisor's memory.
import Int32HistogramModule from "hdr-histogram-js/dist/Int32Histogram.js";
import type { LatencySummary } from "../lib/protocol.ts";
import type { IdleParams } from "../lib/worker_protocol.ts";

/** The part of hdr-histogram-js's histogram that the pool uses. */
interface Histogram {
  recordValue(value: number): void;
  getValueAtPercentile(percentile: number): number;
  readonly mean: number;
  readonly totalCount: number;
  readonly maxValue: number;
}
type HistogramClass = new (lowest: number, highest: number, digits: number) => Histogram;
/** The histogram class out of the CommonJS module's `exports.default`. */
export const Int32Histogram =
  (Int32HistogramModule as unknown as { default: HistogramClass }).default;

/** A latency histogram in microseconds, reported in milliseconds. */
export class LatencyHistogram {
  // 1 µs to 1 hour, three significant digits.
  #histogram = new Int32Histogram(1, 3_600_000_000, 3);
  /** Also told of every value (the Prometheus histograms, with --metrics-port). */
  onRecord: ((ms: number) => void) | undefined;

  recordMs(ms: number): void {
    this.#histogram.recordValue(Math.max(1, Math.round(ms * 1000)));
    this.onRecord?.(ms);
  }

  summary(): LatencySummary {
    const h = this.#histogram;
    const ms = (us: number) => Math.round(us) / 1000;
    return {
      count: h.totalCount,
      mean_ms: h.totalCount ? ms(h.mean) : 0,
      p50_ms: ms(h.getValueAtPercentile(50)),
      p90_ms: ms(h.getValueAtPercentile(90)),
      p99_ms: ms(h.getValueAtPercentile(99)),
      max_ms: ms(h.maxValue),
    };
  }
}

/** Counts by name, e.g. requests by status or restarts by reason. */
export class Counter {
  #counts: Record<string, number> = {};

  add(name: string, by = 1): void {
    this.#counts[name] = (this.#counts[name] ?? 0) + by;
  }

  get total(): number {
    return Object.values(this.#counts).reduce((a, b) => a + b, 0);
  }

  toJSON(): Record<string, number> {
    return { ...this.#counts };
  }
}

export class PoolStats {
  readonly startedAt = performance.now();
  /** Finished execute requests by outcome: a status, or an error name. */
  readonly requests = new Counter();
  /** Worker replacements by reason. */
  readonly restarts = new Counter();
  /** Autoscaling steps: `up`, `down`. */
  readonly scaling = new Counter();
  /** Time from arrival to the start of the run. */
  readonly wait = new LatencyHistogram();
  /** Time the worker took, as the supervisor sees it. */
  readonly run = new LatencyHistogram();
  /**
   * Resets by kind: after requests, `image` (the memory image put back) or `python`; at a
   * worker's request limit, `renewal`.
   */
  readonly resets = new Counter();
  /** Interpreters put back in place after they crashed or exited, by how they ended. */
  readonly recoveries = new Counter();
  /** Time a worker took to reset after a request (off the request's path). */
  readonly reset = new LatencyHistogram();
  /** Time to park a session (save what it changed) before another owner's request. */
  readonly park = new LatencyHistogram();
  /** Time to resume a parked session before its request. */
  readonly resume = new LatencyHistogram();
  /** Sum of busy time across workers, for utilization. */
  busyMs = 0;

  /** A worker's after-work report (the `idle` notification): its costs. */
  recordAfterWork(idle: IdleParams): void {
    if (idle.restore_ms !== undefined) {
      this.resets.add("image");
      this.reset.recordMs(idle.restore_ms);
    }
    if (idle.reset !== "none") {
      this.resets.add(idle.reset);
      this.reset.recordMs(idle.reset_ms);
    }
    if (idle.recovered !== undefined) this.recoveries.add(idle.recovered);
    if (idle.park_ms !== undefined) this.park.recordMs(idle.park_ms);
    if (idle.resume_ms !== undefined) this.resume.recordMs(idle.resume_ms);
  }
}
