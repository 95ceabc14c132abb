/**
 * The autoscaling policy, as a pure function over a picture of the pool: grow by one worker
 * when requests wait too long, retire one idle worker above the minimum after an idle period.
 * lifecycle.ts takes the picture and applies the decision.
 *
 * @module
 */

import type { WorkerState } from "../lib/protocol.ts";

export interface ScaleWorkerView {
  id: string;
  state: WorkerState;
  /** Leaving already (retiring, or recycling with its replacement on the way). */
  leaving: boolean;
  /** Milliseconds since it last finished a request (or became ready). */
  idleMs: number;
  /** Server-held sessions it holds: such a worker is not retired for idleness. */
  sessions: number;
}

export interface ScaleView {
  workers: ScaleWorkerView[];
  /** How long the oldest queued request has waited; undefined when the queue is empty. */
  oldestWaitMs: number | undefined;
  minWorkers: number;
  maxWorkers: number;
  scaleUpWaitMs: number;
  scaleDownIdleMs: number;
}

export type ScaleDecision =
  | { action: "grow"; to: number; reason: string }
  | { action: "retire"; id: string; to: number; reason: string }
  | { action: "none" };

/**
 * Decides one step.
 *
 * - Grow by one when the oldest queued request has waited `scaleUpWaitMs` or more, the pool
 *   is below `maxWorkers`, and no worker is starting (a start takes about 0.4 s; growing one
 *   at a time keeps a burst from starting every worker at once).
 * - Retire the longest-idle worker above `minWorkers` once it has been idle
 *   `scaleDownIdleMs`, while nothing waits and it holds no session.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { decideScale } from "./autoscaler.ts";
 * const decision = decideScale({
 *   workers: [{ id: "w1", state: "busy", leaving: false, idleMs: 0, sessions: 0 }],
 *   oldestWaitMs: 250, minWorkers: 1, maxWorkers: 2, scaleUpWaitMs: 200, scaleDownIdleMs: 60_000,
 * });
 * assert.equal(decision.action, "grow");
 * ```
 */
export function decideScale(view: ScaleView): ScaleDecision {
  const staying = view.workers.filter((w) =>
    !w.leaving && (w.state === "starting" || w.state === "idle" || w.state === "busy")
  );
  const count = staying.length;
  if (view.oldestWaitMs !== undefined) {
    const starting = staying.some((w) => w.state === "starting");
    if (view.oldestWaitMs >= view.scaleUpWaitMs && count < view.maxWorkers && !starting) {
      return {
        action: "grow",
        to: count + 1,
        reason: `oldest request waited ${Math.round(view.oldestWaitMs)} ms`,
      };
    }
    return { action: "none" };
  }
  if (count <= view.minWorkers) return { action: "none" };
  let longest: ScaleWorkerView | undefined;
  for (const w of staying) {
    if (w.state !== "idle" || w.sessions > 0 || w.idleMs < view.scaleDownIdleMs) continue;
    if (!longest || w.idleMs > longest.idleMs) longest = w;
  }
  if (!longest) return { action: "none" };
  return {
    action: "retire",
    id: longest.id,
    to: count - 1,
    reason: `${longest.id} idle for ${Math.round(longest.idleMs / 1000)} s`,
  };
}
