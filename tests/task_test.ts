import assert from "node:assert/strict";
import { ErrorCode, RpcError } from "../lib/errors.ts";
import type { ExecuteResult } from "../lib/protocol.ts";
import { Counter } from "../supervisor/stats.ts";
import { Task } from "../supervisor/task.ts";

const ok = { status: "ok" } as ExecuteResult;

Deno.test("a task settles once: the first answer counts, later ones are ignored", async () => {
  const requests = new Counter();
  const task = new Task({ code: "1" }, "k", undefined, 1000, requests);
  assert.ok(task.finish({ result: ok }));
  const cancelled = new RpcError(ErrorCode.Cancelled, "cancelled");
  assert.equal(task.finish({ error: cancelled, outcome: "cancelled" }), false);
  assert.equal(await task.answer, ok);
  assert.deepEqual(requests.toJSON(), { ok: 1 });
});

Deno.test("a task's queue deadline fires while it waits, never once it started or settled", async () => {
  const fired: string[] = [];
  const waiting = new Task({ code: "1" }, 1, undefined, 10, new Counter());
  waiting.expireInQueue(() => fired.push("waiting"));
  const started = new Task({ code: "1" }, 2, undefined, 10, new Counter());
  started.expireInQueue(() => fired.push("started"));
  started.start();
  const settled = new Task({ code: "1" }, 3, undefined, 10, new Counter());
  settled.expireInQueue(() => fired.push("settled"));
  settled.finish({ result: ok });
  await new Promise((r) => setTimeout(r, 30));
  assert.deepEqual(fired, ["waiting"]);
});
