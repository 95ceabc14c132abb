/**
 * End-to-end tests through one shared warm pool: the real supervisor, real workers, real
 * Python. Tests here leave the pool as they found it, so they can share it.
 */

import assert from "node:assert/strict";
import { Supervisor } from "./helpers/supervisor_process.ts";
import { waitForExit } from "./helpers/processes.ts";

const POOL_SIZE = 2;
let shared: Promise<Supervisor> | undefined;
const pool = () => shared ??= Supervisor.start({ args: ["--pool-size", String(POOL_SIZE)] });

Deno.test("workers restored from one snapshot do not share their random state", async () => {
  const sup = await pool();
  const code = "import random, time\ntime.sleep(0.3)\nrandom.getstate()[1][:4]";
  const results = await Promise.all([sup.execute({ code }), sup.execute({ code })]);
  assert.notEqual(results[0].worker_id, results[1].worker_id);
  assert.notEqual(results[0].result, results[1].result);
});

Deno.test("execute returns stdout, stderr and the repr of the last expression", async () => {
  const sup = await pool();
  const r = await sup.execute({
    code: "import sys\nprint('hello')\nprint('warn', file=sys.stderr)\n{'a': [1, 2]}",
  });
  assert.equal(r.status, "ok");
  assert.equal(r.stdout, "hello\n");
  assert.equal(r.stderr, "warn\n");
  assert.equal(r.result, "{'a': [1, 2]}");
  assert.equal(r.error, null);
  assert.match(r.worker_id, /^w\d+$/);
  assert.ok(r.duration_ms >= 0);
});

Deno.test("a statement as last line gives a null result", async () => {
  const r = await (await pool()).execute({ code: "x = 6 * 7" });
  assert.equal(r.status, "ok");
  assert.equal(r.result, null);
});

Deno.test("Python exceptions are structured error results, not JSON-RPC errors", async () => {
  const r = await (await pool()).execute({
    code: "def f():\n    raise ValueError('bad value')\nf()",
  });
  assert.equal(r.status, "error");
  assert.equal(r.error?.type, "ValueError");
  assert.equal(r.error?.message, "bad value");
  assert.match(r.error!.traceback, /File "<code>", line 3/);
  assert.match(r.error!.traceback, /raise ValueError\('bad value'\)/);
  assert.doesNotMatch(r.error!.traceback, /runtime\.py|_pyodide/);
});

Deno.test("syntax errors are error results", async () => {
  const r = await (await pool()).execute({ code: "def (:" });
  assert.equal(r.status, "error");
  assert.equal(r.error?.type, "SyntaxError");
});

Deno.test("output printed before an exception is kept", async () => {
  const r = await (await pool()).execute({ code: "print('before')\n1/0" });
  assert.equal(r.status, "error");
  assert.equal(r.stdout, "before\n");
  assert.equal(r.error?.type, "ZeroDivisionError");
});

Deno.test("each request starts from a fresh namespace", async () => {
  const sup = await pool();
  await sup.execute({ code: "leaked = 1" });
  await sup.execute({ code: "leaked = 1" });
  const r = await sup.execute({ code: "'leaked' in globals()" });
  assert.equal(r.result, "False");
});

Deno.test("input() reads the request's stdin, and gets EOF without one", async () => {
  const sup = await pool();
  const r = await sup.execute({
    code: "a = input(); b = input()\nprint(b, a)",
    stdin: "one\ntwo\n",
  });
  assert.equal(r.stdout, "two one\n");
  const eof = await sup.execute({ code: "input()" });
  assert.equal(eof.status, "error");
  assert.equal(eof.error?.type, "EOFError");
});

Deno.test("top-level await works", async () => {
  const r = await (await pool()).execute({
    code: "import asyncio\nawait asyncio.sleep(0.01)\n'awaited'",
  });
  assert.equal(r.status, "ok");
  assert.equal(r.result, "'awaited'");
});

Deno.test("a timeout interrupts while True and the same worker stays warm", async () => {
  const sup = await pool();
  const r = await sup.execute({ code: "print('started')\nwhile True: pass", timeout_ms: 300 });
  assert.equal(r.status, "timeout");
  assert.equal(r.stdout, "started\n");
  assert.equal(r.error?.type, "TimeoutError");
  assert.match(r.error!.message, /stopped by interrupt/);
  const health = await sup.health();
  assert.ok(health.workers.some((w) => w.id === r.worker_id), "the worker was not replaced");
  const after = await sup.execute({ code: "1 + 1" });
  assert.equal(after.status, "ok");
});

Deno.test("time.sleep is interrupted by the timeout", async () => {
  const r = await (await pool()).execute({ code: "import time\ntime.sleep(60)", timeout_ms: 300 });
  assert.equal(r.status, "timeout");
  assert.ok(r.duration_ms < 5000, `took ${r.duration_ms} ms`);
});

Deno.test("concurrent requests are routed to different workers", async () => {
  const sup = await pool();
  const results = await Promise.all(
    Array.from({ length: POOL_SIZE }, () => sup.execute({ code: "import time\ntime.sleep(0.3)" })),
  );
  const workers = new Set(results.map((r) => r.worker_id));
  assert.equal(workers.size, POOL_SIZE, `worker ids: ${[...workers]}`);
});

Deno.test("more requests than workers queue and all complete", async () => {
  const sup = await pool();
  const results = await Promise.all(
    Array.from({ length: 20 }, (_, i) => sup.execute({ code: `${i} * 2` })),
  );
  assert.deepEqual(
    results.map((r) => r.result),
    Array.from({ length: 20 }, (_, i) => String(i * 2)),
  );
});

Deno.test("health reports the pool and each worker", async () => {
  const health = await (await pool()).health();
  assert.equal(health.status, "ok");
  assert.equal(health.ready_workers, POOL_SIZE);
  assert.equal(health.workers.length, POOL_SIZE);
  for (const w of health.workers) assert.ok(typeof w.pid === "number" && w.pid > 0);
});

Deno.test("stats reports counters, latency and per-worker memory", async () => {
  const sup = await pool();
  await sup.execute({ code: "1" });
  const stats = await sup.stats();
  assert.ok(stats.requests.ok >= 1);
  assert.ok(stats.run.count >= 1);
  assert.ok(stats.run.p50_ms > 0);
  assert.equal(stats.workers.length, POOL_SIZE);
  for (const w of stats.workers) {
    assert.ok(w.rss_bytes! > 10_000_000, `rss ${w.rss_bytes}`);
    assert.ok(w.heap_bytes! > 1_000_000, `heap ${w.heap_bytes}`);
  }
});

Deno.test("invalid execute params get -32602 naming the field", async () => {
  const sup = await pool();
  const cases: [unknown, string][] = [
    [{}, "code"],
    [{ code: 5 }, "code"],
    [{ code: "1", timeout_ms: -1 }, "timeout_ms"],
    [{ code: "1", timeout_ms: "fast" }, "timeout_ms"],
    [{ code: "1", stdin: 3 }, "stdin"],
    [{ code: "1", cod: "typo" }, "cod"],
    [["print(1)"], "params"],
  ];
  for (const [params, field] of cases) {
    const response = await sup.request("execute", params);
    assert.equal(response.error?.code, -32602, JSON.stringify(params));
    assert.equal(response.error?.data?.field, field);
  }
});

Deno.test("Python cannot write into the JSON-RPC stream", async () => {
  const sup = await pool();
  const forged = '{"jsonrpc":"2.0","id":"forged","result":{"status":"ok"}}';
  const r = await sup.execute({
    code: `import os\nprint(${JSON.stringify(forged)})\nos.write(1, b${
      JSON.stringify(forged + "\n")
    })`,
  });
  assert.equal(r.status, "ok");
  assert.equal(r.stdout, `${forged}\n${forged}\n`);
  assert.ok(!sup.received.some((m) => (m as { id?: unknown }).id === "forged"));
});

Deno.test("bad input gets the spec's errors and the stream goes on serving", async () => {
  const sup = await pool();
  const before = sup.received.length;
  const lines = [
    '{"jsonrpc": "2.0", "method": "foobar, "params": "bar", "baz]',
    '{"jsonrpc": "2.0", "method": 1, "params": "bar"}',
    "[]",
    "[1,2,3]",
    '{"jsonrpc": "2.0", "method": "nope", "id": "unknown"}',
    '{"jsonrpc": "2.0", "method": "execute", "params": {"code": "1"}}',
    "x".repeat((16 << 20) + 10),
    '[{"jsonrpc":"2.0","method":"execute","params":{"code":"1+6"},"id":"b1"},{"foo":"boo"},{"jsonrpc":"2.0","method":"health","id":"b2"}]',
  ];
  for (const line of lines) await sup.sendRaw(line + "\n");
  // The notification-style execute gets no answer: 7 answers for 8 lines.
  const answers = (await sup.waitForLines(before + 7)).slice(before);
  const byCode = (code: number) =>
    answers.filter((a) => (a as { error?: { code: number } }).error?.code === code);
  assert.equal(byCode(-32700).length, 1);
  assert.equal(byCode(-32601).length, 1);
  const invalid = byCode(-32600) as { error: { data: Record<string, unknown> } }[];
  assert.equal(invalid.length, 3, JSON.stringify(answers).slice(0, 500)); // method 1, [], oversized
  assert.ok(invalid.some((e) => e.error.data.max_line_bytes === 16 << 20));
  const batches = answers.filter(Array.isArray) as Record<string, unknown>[][];
  assert.equal(batches.length, 2);
  assert.equal(batches.find((b) => b.length === 3)!.length, 3);
  const mixed = batches.find((b) => b.length === 3 && b.some((r) => r.id === "b1"))!;
  assert.equal((mixed.find((r) => r.id === "b1")!.result as { result: string }).result, "7");
  assert.equal((mixed.find((r) => r.id === null)!.error as { code: number }).code, -32600);
  // Still serving.
  assert.equal((await sup.execute({ code: "'alive'" })).result, "'alive'");
});

Deno.test("shutdown is refused unless enabled, with a hint", async () => {
  const response = await (await pool()).request("shutdown");
  assert.equal(response.error?.code, -32601);
  assert.match(String(response.error?.data?.hint), /--allow-shutdown/);
});

Deno.test({
  name: "close the shared pool",
  fn: async () => {
    const sup = await pool();
    const pids = await sup.workerPids();
    const status = await sup.close();
    assert.equal(status.code, 0);
    await waitForExit(pids);
  },
});
