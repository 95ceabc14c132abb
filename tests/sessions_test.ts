/**
 * Session lifecycle through a pool of one worker with a low request limit and a short TTL:
 * sessions move to the replacement of a recycled worker (as their memory image, or pickled
 * without the image), expire when idle, and are capped per worker.
 */

import assert from "node:assert/strict";
import { Supervisor } from "./helpers/supervisor_process.ts";
import type { ExecuteResult } from "../lib/protocol.ts";
import { waitForExit, waitUntil } from "./helpers/processes.ts";

/** Starts a one-worker pool that recycles after 3 requests, and moves a session off it. */
async function moveSession(isolation: string): Promise<{ sup: Supervisor; moved: ExecuteResult }> {
  const sup = await Supervisor.start({
    args: [
      "--pool-size",
      "1",
      "--worker-request-limit",
      "3",
      "--session-ttl",
      "3",
      "--max-sessions-per-worker",
      "2",
      "--isolation",
      isolation,
    ],
  });
  // A generator halfway through and a function: no pickle takes them.
  const first = await sup.execute({
    code: "import math\ntotal = 40\ndef helper():\n    return 'helped'\n" +
      "counter = (i for i in range(10))\nnext(counter)",
    session_id: "moving",
  });
  assert.equal(first.worker_id, "w1");
  await sup.execute({ code: "total += 1", session_id: "moving" });
  // The third request reaches the limit. Without the image, w2 starts and w1 hands its sessions
  // over; with it, the interpreter is renewed in place 9 times first (faults_test.ts), then the
  // limit at the 30th request recycles w1.
  await sup.execute({ code: "total += 1", session_id: "moving" });
  for (let served = 3; isolation !== "none" && served < 30; served++) {
    await sup.execute({ code: "1" });
  }
  await waitUntil("w2 alone", async () => {
    const h = await sup.health();
    return h.workers.length === 1 && h.workers[0].id === "w2" && h.ready_workers === 1;
  });
  const moved = await sup.execute({ code: "(total, round(math.pi, 3))", session_id: "moving" });
  assert.equal(moved.worker_id, "w2");
  assert.equal(moved.result, "(42, 3.142)");
  const again = await sup.execute({ code: "total", session_id: "moving" });
  assert.equal(again.session_moved, undefined, "the move is reported once");
  return { sup, moved };
}

Deno.test("without the image, a session moves pickled: what pickle cannot take is named", async () => {
  const { sup, moved } = await moveSession("none");
  assert.deepEqual(moved.session_moved, { dropped: ["counter", "helper"] });
  assert.equal((await sup.close()).code, 0);
});

Deno.test("sessions move to the replacement of a recycled worker, expire, and are capped", async () => {
  const { sup, moved } = await moveSession("request");
  // The memory image moves everything: the function, the generator where it stopped.
  assert.deepEqual(moved.session_moved, { dropped: [] });
  const kept = await sup.execute({ code: "(helper(), next(counter))", session_id: "moving" });
  assert.equal(kept.result, "('helped', 1)");

  // Capacity: w2 holds "moving"; one more fits, a third waits for room and times out.
  assert.equal((await sup.execute({ code: "x = 1", session_id: "second" })).status, "ok");
  const third = await sup.execute({ code: "1", session_id: "third", timeout_ms: 500 });
  assert.equal(third.status, "timeout");
  assert.match(third.error!.message, /queue/);

  // Expiry: unused for longer than the TTL.
  await new Promise((r) => setTimeout(r, 4500));
  const expired = await sup.request("execute", { code: "total", session_id: "moving" });
  assert.equal(expired.error?.code, -32004);
  assert.match(expired.error!.message, /expired/);
  const health = await sup.health();
  assert.deepEqual(health.workers[0].sessions, []);

  const pids = await sup.workerPids();
  assert.equal((await sup.close()).code, 0);
  await waitForExit(pids);
});

Deno.test("a worker replaced while its health check runs still leaves, and its session moves", async () => {
  // Health checks back to back: the successor is nearly always ready while one runs. Without
  // the image, so that the limit recycles the worker rather than renew it.
  const sup = await Supervisor.start({
    args: [
      "--pool-size",
      "1",
      "--worker-request-limit",
      "1",
      "--health-check-interval",
      "0.002",
      "--isolation",
      "none",
    ],
  });
  try {
    const first = await sup.execute({ code: "kept = 7", session_id: "checked" });
    assert.equal(first.worker_id, "w1");
    await waitUntil("w1 gone", async () => {
      const h = await sup.health();
      return h.workers.every((w) => w.id !== "w1") && h.ready_workers === 1;
    });
    const moved = await sup.execute({ code: "kept", session_id: "checked" });
    assert.equal(moved.result, "7");
    assert.notEqual(moved.worker_id, "w1");
  } finally {
    await sup.close();
  }
});

Deno.test("a new session's second request, sent while its first runs, waits for its worker", async () => {
  const sup = await Supervisor.start({ args: ["--pool-size", "2"] });
  // Both workers idle: without the pin taken at dispatch, the second went to the other one and
  // ran in a namespace of its own (NameError), and the session ended up on that worker.
  const first = sup.execute({ code: "import time\ntime.sleep(0.3)\nn = 1", session_id: "pair" });
  const second = sup.execute({ code: "n += 1\nn", session_id: "pair" });
  const [a, b] = await Promise.all([first, second]);
  assert.equal(b.result, "2", JSON.stringify(b.error));
  assert.equal(b.worker_id, a.worker_id);
  assert.equal((await sup.execute({ code: "n", session_id: "pair" })).result, "2");
  assert.equal((await sup.close()).code, 0);
});

Deno.test("a session the renewal drops past --max-parked-mb is reported lost, not moved blank", async () => {
  // --worker-max-rss-mb below a worker's resident memory: the worker asks to be replaced after
  // its first request's answer, when the limit of 1 has already started its renewal. The
  // renewal parks the session, which holds more than --max-parked-mb: it is dropped there, and
  // the worker leaves before it serves another request.
  const sup = await Supervisor.start({
    args: [
      "--pool-size",
      "1",
      "--worker-request-limit",
      "1",
      "--max-parked-mb",
      "1",
      "--worker-max-rss-mb",
      "128",
    ],
  });
  try {
    const made = await sup.execute({
      code: "import os\ndata = os.urandom(4_000_000)\nlen(data)",
      session_id: "big",
    });
    assert.equal(made.result, "4000000");
    await waitUntil("w2 alone", async () => {
      const h = await sup.health();
      return h.workers.length === 1 && h.workers[0].id === "w2" && h.ready_workers === 1;
    });
    assert.equal((await sup.stats()).resets.renewal, 1, "the renewal ran");
    const after = await sup.request("execute", { code: "len(data)", session_id: "big" });
    assert.equal(after.error?.code, -32004, JSON.stringify(after));
    assert.match(after.error!.message, /--max-parked-mb/);
  } finally {
    await sup.close();
  }
});

Deno.test("a session the renewal drops past --max-parked-mb is reported lost once", async () => {
  const sup = await Supervisor.start({
    args: ["--pool-size", "1", "--worker-request-limit", "2", "--max-parked-mb", "1"],
  });
  try {
    await sup.execute({ code: "1" });
    // The second request reaches the limit: the renewal parks the session, too large to keep.
    await sup.execute({ code: "import os\ndata = os.urandom(4_000_000)", session_id: "big" });
    await waitUntil("the renewal", async () => (await sup.stats()).resets.renewal === 1);
    const again = "try:\n    data\nexcept NameError:\n    data = b'new'\nlen(data)";
    const told = await sup.request("execute", { code: again, session_id: "big" });
    assert.equal(told.error?.code, -32004, JSON.stringify(told));
    // Told once: the id names a new session from then on.
    const restarted = await sup.request("execute", { code: again, session_id: "big" });
    assert.equal(
      (restarted.result as ExecuteResult | undefined)?.result,
      "3",
      JSON.stringify(restarted),
    );
  } finally {
    await sup.close();
  }
});

Deno.test("a session does not expire while its own request runs past --session-ttl", async () => {
  const sup = await Supervisor.start({ args: ["--pool-size", "1", "--session-ttl", "1"] });
  try {
    await sup.execute({ code: "n = 5", session_id: "long" });
    // Expiry looks every half TTL: it comes while this request runs.
    const slow = await sup.execute({ code: "import time\ntime.sleep(2.5)\nn", session_id: "long" });
    assert.equal(slow.result, "5");
    const next = await sup.request("execute", { code: "n", session_id: "long" });
    assert.equal((next.result as ExecuteResult | undefined)?.result, "5", JSON.stringify(next));
  } finally {
    await sup.close();
  }
});

Deno.test("a session that expires while it moves to a worker's successor is not kept there", async () => {
  const sup = await Supervisor.start({
    args: ["--pool-size", "1", "--worker-request-limit", "1", "--session-ttl", "2"],
  });
  try {
    await sup.execute({ code: "n = 5", session_id: "s" });
    // Renewals 2 to 9, then the tenth limit recycles w1: w2 starts.
    for (let i = 1; i < 10; i++) {
      await sup.execute({ code: "1" });
      await waitUntil("idle", async () => (await sup.health()).workers[0].state === "idle");
    }
    let running = true;
    const long = sup.execute({ code: "import time\ntime.sleep(6)\nn", session_id: "s" })
      .finally(() => running = false);
    await waitUntil("w2 ready", async () => {
      const { workers } = await sup.health();
      return workers.some((w) => w.id === "w2" && w.state === "idle");
    });
    assert.ok(running, "w2 was ready while w1 still ran the session's request");
    // w2 takes this one; the session's move to w2 waits for it, and the session expires then.
    const busy = sup.execute({ code: "import time\ntime.sleep(10)\n'w2'" });
    assert.equal((await long).result, "5");
    assert.equal((await busy).worker_id, "w2");
    await waitUntil("w1 gone", async () => (await sup.health()).workers.length === 1);
    const told = await sup.request("execute", { code: "n", session_id: "s" });
    assert.equal(told.error?.code, -32004, JSON.stringify(told));
    // The id names a new session now: the expired one's state must not come back.
    const fresh = await sup.request("execute", { code: "n", session_id: "s" });
    const result = fresh.result as ExecuteResult | undefined;
    assert.equal(result?.error?.type, "NameError", JSON.stringify(fresh));
  } finally {
    await sup.close();
  }
});
