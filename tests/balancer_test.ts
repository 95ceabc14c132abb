import assert from "node:assert/strict";
import { pickWorker, type WorkerView } from "../supervisor/balancer.ts";
import { TaskQueue } from "../supervisor/task_queue.ts";

const view = (id: string, state: WorkerView["state"], lastUsedAt = 0, retiring = false) => ({
  id,
  state,
  lastUsedAt,
  retiring,
});

Deno.test("pickWorker takes the idle worker idle the longest", () => {
  assert.equal(pickWorker([view("a", "idle", 9), view("b", "idle", 3), view("c", "busy", 0)]), "b");
});

Deno.test("pickWorker skips busy, starting, exited and retiring workers", () => {
  assert.equal(
    pickWorker([
      view("a", "busy"),
      view("b", "starting"),
      view("c", "exited"),
      view("d", "idle", 0, true),
    ]),
    undefined,
  );
});

Deno.test("TaskQueue is a bounded FIFO with removal from the middle", () => {
  const q = new TaskQueue<number>(3);
  assert.ok(q.push(1) && q.push(2) && q.push(3));
  assert.equal(q.push(4), false);
  assert.ok(q.delete(2));
  assert.equal(q.shift(), 1);
  assert.deepEqual([...q], [3]);
  assert.deepEqual(q.drain(), [3]);
  assert.equal(q.size, 0);
});
