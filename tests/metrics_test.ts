/**
 * `--metrics-port`: Prometheus text and `/health` over HTTP on loopback, scraped from a real
 * pool; `deno task health` against it; the start-up progress on stderr.
 */

import assert from "node:assert/strict";
import { Supervisor } from "./helpers/supervisor_process.ts";
import { metricsPortIn, parseMetrics } from "./helpers/metrics.ts";
import { waitFor, waitUntil } from "./helpers/processes.ts";

async function runHealthTask(port: string): Promise<{ code: number; output: string }> {
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["task", "--quiet", "health", "--port", port],
    cwd: new URL("../", import.meta.url).pathname,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder();
  return { code, output: text.decode(stdout) + text.decode(stderr) };
}

/** The metrics port a supervisor started with `--metrics-port 0` (and info logs) chose. */
function metricsPort(sup: Supervisor): Promise<string> {
  return waitFor("the metrics URL", () => {
    return Promise.resolve(metricsPortIn(sup.stderr));
  }, 10_000);
}

Deno.test("metrics: a scrape reports what the pool did; health answers for scripts", async () => {
  const sup = await Supervisor.start({
    args: ["--pool-size", "1", "--metrics-port", "0"],
    env: { PYODIDE_LOG_LEVEL: "info" },
  });
  try {
    // Progress on start: each worker and the pool as they become ready.
    assert.match(sup.stderr, /worker w1 ready \(1\/1\) in \d+ ms/);
    assert.match(sup.stderr, /pool ready: 1\/1 workers in \d+ ms/);
    const port = await metricsPort(sup);
    const scrape = async () => {
      const response = await fetch(`http://127.0.0.1:${port}/metrics`);
      assert.equal(response.status, 200);
      assert.match(response.headers.get("content-type")!, /^text\/plain; version=0\.0\.4/);
      return parseMetrics(await response.text());
    };
    const before = await scrape();
    const count = (m: Map<string, number>, key: string) => m.get(key) ?? 0;
    await sup.execute({ code: "1 + 1" });
    await sup.execute({ code: "1 + 1" });
    await sup.execute({ code: "1 / 0" });
    await sup.execute({ code: "while True: pass", timeout_ms: 100 });
    const after = await scrape();
    const moved = (key: string) => count(after, key) - count(before, key);
    assert.equal(moved('pyodide_pool_requests_total{status="ok"}'), 2);
    assert.equal(moved('pyodide_pool_requests_total{status="error"}'), 1);
    assert.equal(moved('pyodide_pool_requests_total{status="timeout"}'), 1);
    assert.equal(moved("pyodide_pool_run_seconds_count"), 4);
    assert.equal(moved("pyodide_pool_wait_seconds_count"), 4);
    assert.ok(count(after, 'pyodide_pool_run_seconds_bucket{le="0.25"}') >= 4);
    assert.equal(count(after, "pyodide_pool_queue_depth"), 0);
    assert.equal(count(after, 'pyodide_pool_workers{state="idle"}'), 1);
    assert.ok(count(after, 'pyodide_pool_worker_heap_bytes{worker="w1"}') >= 16 << 20);
    assert.ok(count(after, 'pyodide_pool_worker_rss_bytes{worker="w1"}') >= 50 << 20);
    assert.ok(count(after, "pyodide_pool_supervisor_rss_bytes") > 0);
    // Requests of no one: the image is put back after each (reported once it is done).
    await waitFor("four resets", async () => {
      const resets = count(await scrape(), 'pyodide_pool_resets_total{kind="image"}');
      return resets - count(before, 'pyodide_pool_resets_total{kind="image"}') >= 4 || undefined;
    }, 5000);
    assert.ok(count(await scrape(), "pyodide_pool_reset_seconds_count") >= 4);
    // `stats` is the same source.
    const stats = await sup.stats();
    assert.equal(stats.requests.ok, count(after, 'pyodide_pool_requests_total{status="ok"}'));

    const health = await fetch(`http://127.0.0.1:${port}/health`);
    assert.equal(health.status, 200);
    assert.equal((await health.json()).status, "ok");
    const healthy = await runHealthTask(port);
    assert.equal(healthy.code, 0, healthy.output);
    assert.match(healthy.output, /^ok: 1 of 1 workers ready, 0 queued/);
    assert.equal((await fetch(`http://127.0.0.1:${port}/nothing`)).status, 404);
  } finally {
    await sup.close();
  }
  // A port nothing listens on: the pool is gone.
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const closedPort = String(listener.addr.port);
  listener.close();
  const gone = await runHealthTask(closedPort);
  assert.equal(gone.code, 2, gone.output);
  assert.match(
    gone.output,
    new RegExp(`no answer from http://127\\.0\\.0\\.1:${closedPort}/health`),
  );
});

Deno.test("metrics: deno task health exits 1 while the pool shuts down", async () => {
  const sup = await Supervisor.start({
    args: ["--pool-size", "1", "--metrics-port", "0", "--shutdown-grace", "30"],
    env: { PYODIDE_LOG_LEVEL: "info" },
  });
  try {
    const port = await metricsPort(sup);
    // A run that outlasts the check holds the pool in its shutdown's grace period; it is
    // cancelled below, so the test does not wait for it.
    const running = sup.request("execute", { code: "import time\ntime.sleep(30)" }, "long");
    await waitUntil("the run to start", async () => {
      const health = await sup.health();
      return health.workers[0]?.state === "busy";
    }, 10_000);
    sup.process.kill("SIGTERM");
    await waitUntil("the pool to report its shutdown", async () => {
      const response = await fetch(`http://127.0.0.1:${port}/health`);
      return (await response.json()).status === "shutting_down";
    }, 10_000);
    const unhealthy = await runHealthTask(port);
    assert.equal(unhealthy.code, 1, unhealthy.output);
    assert.match(unhealthy.output, /^shutting_down: 1 of 1 workers ready, 0 queued/);
    await sup.cancel("long");
    assert.equal((await running).error?.code, -32003);
  } finally {
    assert.equal((await sup.close()).code, 0);
  }
});
