/**
 * Limits that keep workers warm, through one shared pool with small caps: timeouts that
 * swallow interrupts, memory and output caps, recursion, fatal errors, queue timeouts and
 * cancellation. Every test leaves the pool with two ready workers.
 */

import assert from "node:assert/strict";
import { Supervisor } from "./helpers/supervisor_process.ts";
import { waitForExit, waitUntil } from "./helpers/processes.ts";

let shared: Promise<Supervisor> | undefined;
const pool = () =>
  shared ??= Supervisor.start({
    args: [
      "--pool-size",
      "2",
      "--worker-max-memory-mb",
      "256",
      "--worker-recycle-heap-mb",
      "128",
      "--max-output-bytes",
      "1000",
    ],
  });

const twoReady = async (sup: Supervisor) =>
  await waitUntil("two ready workers", async () => {
    const h = await sup.health();
    return h.ready_workers === 2 && h.workers.length === 2;
  });

/** Runs `code` `times` times, each cancelled as it is sent: each must be stopped by the interrupt. */
async function cancelEachAsSent(sup: Supervisor, code: string, times: number): Promise<void> {
  for (let i = 0; i < times; i++) {
    const id = `instant-${i}`;
    const running = sup.request("execute", { code }, id);
    await sup.cancel(id);
    const r = await running;
    assert.equal(r.error?.code, -32003, JSON.stringify(r));
    assert.equal(r.error?.data?.stopped_by, "interrupt", JSON.stringify(r));
  }
}

async function pidOf(sup: Supervisor, workerId: string): Promise<number | undefined> {
  const health = await sup.health();
  return health.workers.find((w) => w.id === workerId)?.pid;
}

Deno.test("code that catches KeyboardInterrupt once is stopped by a repeated interrupt", async () => {
  const sup = await pool();
  const r = await sup.execute({
    code:
      "try:\n    while True: pass\nexcept KeyboardInterrupt:\n    print('caught')\nwhile True: pass",
    timeout_ms: 300,
  });
  assert.equal(r.status, "timeout");
  assert.match(r.error!.message, /stopped by repeated_interrupt/);
  assert.equal(r.stdout, "caught\n");
});

Deno.test("code that swallows every interrupt gets a fresh interpreter, then the process is replaced", async () => {
  const sup = await pool();
  const r = await sup.execute({
    code:
      "while True:\n    try:\n        while True: pass\n    except BaseException:\n        pass",
    timeout_ms: 300,
  });
  assert.equal(r.status, "timeout");
  assert.match(r.error!.message, /stopped by interpreter_restart/);
  const pid = await pidOf(sup, r.worker_id);
  assert.ok(pid, "the worker process is still in the pool");
  const stats = await sup.stats();
  assert.equal(stats.workers.find((w) => w.id === r.worker_id)?.interpreter_restarts, 1);
  // The terminated Web Worker may still spin inside Wasm, so the process asks to be replaced:
  // its replacement starts first, then it leaves.
  await waitUntil("the replacement", async () => {
    const h = await sup.health();
    return h.ready_workers === 2 && !h.workers.some((w) => w.id === r.worker_id);
  });
  await waitForExit([pid!]);
  const after = await sup.stats();
  assert.equal(after.restarts.interpreter_restart, 1);
});

Deno.test("workers answer stats while Python runs", async () => {
  const sup = await pool();
  const running = sup.execute({ code: "import time\ntime.sleep(1)", timeout_ms: 5000 });
  await waitUntil(
    "a busy worker",
    async () => (await sup.health()).workers.some((w) => w.state === "busy"),
  );
  const stats = await sup.stats();
  const busy = stats.workers.find((w) => w.state === "busy");
  assert.ok(busy?.rss_bytes, `the busy worker answered: ${JSON.stringify(stats.workers)}`);
  assert.equal((await running).status, "ok");
});

Deno.test("stdout past the cap stops the run with output_limit; the worker stays", async () => {
  const sup = await pool();
  const r = await sup.execute({ code: "while True:\n    print('x' * 100)" });
  assert.equal(r.status, "output_limit");
  assert.equal(r.truncated, true);
  assert.equal(r.stdout.length, 1000);
  assert.equal(r.error?.type, "OutputLimitError");
  const next = await sup.execute({ code: "print('small')" });
  assert.equal(next.stdout, "small\n");
  assert.equal(next.truncated, false);
});

Deno.test("a MemoryError past the heap cap is memory_limit; the grown worker is recycled", async () => {
  const sup = await pool();
  const r = await sup.execute({
    code: "blocks = []\nwhile True:\n    blocks.append(bytearray(10_000_000))",
  });
  assert.equal(r.status, "memory_limit");
  assert.equal(r.error?.type, "MemoryError");
  assert.match(r.error!.message, /capped at 256 MB/);
  const big = await sup.execute({ code: "bytearray(1_000_000_000)" });
  assert.equal(big.status, "memory_limit");
  await waitUntil("the grown worker's replacement", async () => {
    const h = await sup.health();
    return h.ready_workers === 2 && !h.workers.some((w) => w.id === r.worker_id);
  });
  const stats = await sup.stats();
  assert.ok(stats.restarts.heap_grown >= 1);
  assert.equal((await sup.execute({ code: "'fine'" })).result, "'fine'");
});

Deno.test("RecursionError is an ordinary error result", async () => {
  const r = await (await pool()).execute({ code: "def f(n):\n    return f(n + 1)\nf(0)" });
  assert.equal(r.status, "error");
  assert.equal(r.error?.type, "RecursionError");
  assert.ok(r.error!.traceback.split("\n").length < 200, "the traceback is bounded");
});

Deno.test("a Pyodide fatal error fails only its request; its worker recovers in place", async () => {
  const sup = await pool();
  await twoReady(sup);
  const pids = await sup.workerPids();
  const bystander = sup.execute({ code: "import time\ntime.sleep(1)\n'unharmed'" });
  // Recursion through C (`map`): the stack overflows before the heap grows past the recycle
  // limit, which would replace the worker for another reason.
  const crashed = await sup.execute({
    code: "import sys\nsys.setrecursionlimit(10**6)\ndef f(n):\n    return list(map(f, [n]))\nf(0)",
  });
  assert.equal(crashed.status, "crashed");
  assert.equal(crashed.error?.message, "stack overflow");
  assert.equal((await bystander).result, "'unharmed'");
  assert.deepEqual(await sup.workerPids(), pids);
});

Deno.test("a request whose deadline passes in the queue never runs", async () => {
  const sup = await pool();
  await twoReady(sup);
  const busy = [1, 2].map(() => sup.execute({ code: "import time\ntime.sleep(0.6)" }));
  const r = await sup.execute({ code: "print('ran')", timeout_ms: 200 });
  assert.equal(r.status, "timeout");
  assert.match(r.error!.message, /waiting in the queue; it never ran/);
  assert.equal(r.stdout, "");
  await Promise.all(busy);
});

Deno.test("$/cancelRequest cancels a queued and a running request with -32003", async () => {
  const sup = await pool();
  await twoReady(sup);
  const running = [1, 2].map((i) =>
    sup.request("execute", { code: "import time\ntime.sleep(30)" }, `run-${i}`)
  );
  const queued = sup.request("execute", { code: "print('never')" }, "queued-1");
  await waitUntil(
    "both busy",
    async () => (await sup.health()).workers.every((w) => w.state === "busy"),
  );
  await sup.cancel("queued-1");
  assert.equal((await queued).error?.code, -32003);
  const started = Date.now();
  await sup.cancel("run-1");
  await sup.cancel("run-2");
  for (const r of await Promise.all(running)) {
    assert.equal(r.error?.code, -32003, JSON.stringify(r));
    assert.equal(r.error?.data?.stopped_by, "interrupt", JSON.stringify(r));
  }
  assert.ok(Date.now() - started < 5000);
  assert.equal((await sup.execute({ code: "'after cancel'" })).result, "'after cancel'");
});

Deno.test("a request cancelled as it is sent is stopped by the first interrupt", async () => {
  const sup = await pool();
  await twoReady(sup);
  // The cancel reaches the worker before or just after its Python thread takes up the run.
  // Pyodide's own signal check used to lose 1 interrupt in about 230 (see guardSignalBuffer):
  // 200 runs, about a second, caught it in 2 of 4 runs of the old code.
  await cancelEachAsSent(sup, "while True: pass", 200);
  await twoReady(sup);
});

Deno.test("an async loop cancelled as it is sent is stopped by the interrupt and crashes no worker", async () => {
  const sup = await pool();
  await twoReady(sup);
  const crashes = async () => (await sup.stats()).restarts.crashed ?? 0;
  const crashedBefore = await crashes();
  // An interrupt taken in Pyodide's event-loop code around the callbacks, rather than in the
  // request's, used to escape into a JavaScript timer and end the worker (2 runs in 300); one
  // taken as a step scheduled the next lost the task (1 in 100; the interpreter was replaced).
  await cancelEachAsSent(sup, "import asyncio\nwhile True:\n    await asyncio.sleep(0)", 150);
  assert.equal(await crashes(), crashedBefore);
  await twoReady(sup);
});

Deno.test({
  name: "close the limits pool",
  fn: async () => {
    const sup = await pool();
    const pids = await sup.workerPids();
    assert.equal((await sup.close()).code, 0);
    await waitForExit(pids);
  },
});
