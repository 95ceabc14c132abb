/**
 * Autoscaling: the policy as a pure function, then a real pool growing under load and
 * shrinking back to its minimum when idle.
 */

import assert from "node:assert/strict";
import { Supervisor } from "./helpers/supervisor_process.ts";
import { decideScale, type ScaleView, type ScaleWorkerView } from "../supervisor/autoscaler.ts";
import { waitUntil } from "./helpers/processes.ts";

const worker = (id: string, state: ScaleWorkerView["state"], idleMs = 0, more = {}) => ({
  id,
  state,
  leaving: false,
  idleMs,
  sessions: 0,
  ...more,
});
const view = (workers: ScaleWorkerView[], oldestWaitMs?: number): ScaleView => ({
  workers,
  oldestWaitMs,
  minWorkers: 1,
  maxWorkers: 3,
  scaleUpWaitMs: 200,
  scaleDownIdleMs: 60_000,
});

Deno.test("policy: grows by one when the oldest request waited long enough", () => {
  assert.deepEqual(decideScale(view([worker("w1", "busy")], 250)), {
    action: "grow",
    to: 2,
    reason: "oldest request waited 250 ms",
  });
  assert.equal(decideScale(view([worker("w1", "busy")], 150)).action, "none");
});

Deno.test("policy: never above max, and one start at a time", () => {
  const full = [worker("w1", "busy"), worker("w2", "busy"), worker("w3", "busy")];
  assert.equal(decideScale(view(full, 5_000)).action, "none");
  const starting = [worker("w1", "busy"), worker("w2", "starting")];
  assert.equal(decideScale(view(starting, 5_000)).action, "none");
  // A leaving worker does not count: its place may be refilled.
  const leaving = [...full.slice(0, 2), worker("w3", "busy", 0, { leaving: true })];
  assert.equal(decideScale(view(leaving, 5_000)).action, "grow");
});

Deno.test("policy: retires the longest idle worker above min, never one with sessions", () => {
  const idle = [worker("w1", "idle", 61_000), worker("w2", "idle", 90_000)];
  assert.deepEqual(decideScale(view(idle)), {
    action: "retire",
    id: "w2",
    to: 1,
    reason: "w2 idle for 90 s",
  });
  assert.equal(decideScale(view([worker("w1", "idle", 90_000)])).action, "none", "at min");
  const withSession = [worker("w1", "busy"), worker("w2", "idle", 90_000, { sessions: 1 })];
  assert.equal(decideScale(view(withSession)).action, "none");
  const notLongEnough = [worker("w1", "busy"), worker("w2", "idle", 30_000)];
  assert.equal(decideScale(view(notLongEnough)).action, "none");
  // Nothing is retired while requests wait.
  assert.equal(decideScale(view(idle, 10)).action, "none");
});

Deno.test("a real pool grows under load and shrinks back to its minimum", async () => {
  const sup = await Supervisor.start({
    args: ["--min-workers", "1", "--max-workers", "2", "--scale-up-wait-ms", "50"].concat(
      ["--scale-down-idle", "1"],
    ),
  });
  try {
    const sizes: number[] = [];
    const health = async () => {
      const h = await sup.health();
      sizes.push(h.ready_workers);
      return h;
    };
    assert.equal((await health()).min_workers, 1);
    const slow = Array.from(
      { length: 4 },
      () => sup.execute({ code: "import time\ntime.sleep(0.7)" }),
    );
    await waitUntil("a second worker", async () => (await health()).ready_workers === 2, 15_000);
    const results = await Promise.all(slow);
    assert.deepEqual(results.map((r) => r.status), ["ok", "ok", "ok", "ok"]);
    assert.equal(new Set(results.map((r) => r.worker_id)).size, 2, "both workers served");
    await waitUntil("back to one worker", async () => {
      const h = await sup.health();
      return h.workers.length === 1;
    }, 15_000);
    assert.ok(Math.min(...sizes) >= 1, `never below the minimum: ${sizes}`);
    const stats = await sup.stats();
    assert.deepEqual(stats.scaling, { up: 1, down: 1 });
    assert.equal((await sup.execute({ code: "1 + 1" })).result, "2");
  } finally {
    await sup.close();
  }
});
