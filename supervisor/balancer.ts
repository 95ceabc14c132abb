/**
 * Which worker gets the next request: a pure function over a read-only view of the workers,
 * so that the policy is easy to test and to swap.
 *
 * @module
 */

import type { WorkerState } from "../lib/protocol.ts";

/** What the balancer may know about a worker. */
export interface WorkerView {
  readonly id: string;
  readonly state: WorkerState;
  readonly retiring: boolean;
  /** When it last finished a request (ms, monotonic); 0 if never. */
  readonly lastUsedAt: number;
  /** Still resetting after its last answer: it would start a request only after that. */
  readonly settling?: boolean;
}

/**
 * Picks the least busy worker: an idle one that is not retiring and that `accept` allows
 * (session affinity and capacity), preferring one done with its reset, then the one idle the
 * longest so that work (and so recycling) spreads evenly. Returns undefined when none is free.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { pickWorker } from "./balancer.ts";
 * const id = pickWorker([
 *   { id: "w1", state: "busy", retiring: false, lastUsedAt: 0 },
 *   { id: "w2", state: "idle", retiring: false, lastUsedAt: 5 },
 *   { id: "w3", state: "idle", retiring: false, lastUsedAt: 2 },
 * ]);
 * assert.equal(id, "w3");
 * const settled = pickWorker([
 *   { id: "w1", state: "idle", retiring: false, lastUsedAt: 1, settling: true },
 *   { id: "w2", state: "idle", retiring: false, lastUsedAt: 5 },
 * ]);
 * assert.equal(settled, "w2");
 * ```
 */
export function pickWorker(
  workers: Iterable<WorkerView>,
  accept: (id: string) => boolean = () => true,
): string | undefined {
  let best: WorkerView | undefined;
  for (const worker of workers) {
    if (worker.state !== "idle" || worker.retiring || !accept(worker.id)) continue;
    const settling = worker.settling ?? false;
    const bestSettling = best?.settling ?? false;
    if (
      !best || settling < bestSettling ||
      (settling === bestSettling && worker.lastUsedAt < best.lastUsedAt)
    ) best = worker;
  }
  return best?.id;
}
