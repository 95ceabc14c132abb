/**
 * Faults and lifecycle through real processes: each test starts its own small pool, since it
 * kills, stops or shuts down workers.
 */

import assert from "node:assert/strict";
import { runChaos } from "./helpers/chaos.ts";
import { Supervisor, supervisorCommand } from "./helpers/supervisor_process.ts";
import { isAlive, waitFor, waitForExit } from "./helpers/processes.ts";

async function busyWorker(sup: Supervisor) {
  return await waitFor("a busy worker", async () => {
    const health = await sup.health();
    return health.workers.find((w) => w.state === "busy");
  });
}

async function closeAndCheck(sup: Supervisor) {
  const pids = await sup.workerPids();
  const status = await sup.close();
  assert.equal(status.code, 0, sup.stderr);
  await waitForExit(pids);
}

Deno.test("a full queue answers -32000 with the queue's figures", async () => {
  const sup = await Supervisor.start({ args: ["--pool-size", "1", "--max-queue", "1"] });
  const slow = { code: "import time\ntime.sleep(0.5)" };
  const running = sup.request("execute", slow);
  await busyWorker(sup);
  const queued = sup.request("execute", slow);
  const rejected = await sup.request("execute", slow);
  assert.equal(rejected.error?.code, -32000);
  assert.equal(rejected.error?.data?.max_queue, 1);
  assert.equal(rejected.error?.data?.queue_depth, 1);
  assert.equal(((await running).result as { status: string }).status, "ok");
  assert.equal(((await queued).result as { status: string }).status, "ok");
  await closeAndCheck(sup);
});

Deno.test("a worker killed mid-request fails only that request; the pool heals", async () => {
  const sup = await Supervisor.start({ args: ["--pool-size", "2"] });
  const doomed = sup.request("execute", { code: "import time\ntime.sleep(30)" });
  const victim = await busyWorker(sup);
  const bystander = sup.request("execute", { code: "import time\ntime.sleep(0.5)\n'fine'" });
  Deno.kill(victim.pid, "SIGKILL");
  const failed = await doomed;
  assert.equal(failed.error?.code, -32001);
  assert.equal(failed.error?.data?.worker_id, victim.id);
  assert.equal(failed.error?.data?.signal, "SIGKILL");
  assert.match(failed.error!.message, /not re-run/);
  assert.equal(((await bystander).result as { result: string }).result, "'fine'");
  const healed = await waitFor("the replacement", async () => {
    const health = await sup.health();
    return health.ready_workers === 2 && !health.workers.some((w) => w.id === victim.id)
      ? health
      : undefined;
  });
  assert.equal(healed.workers.length, 2);
  const stats = await sup.stats();
  assert.equal(stats.restarts.crashed, 1);
  const after = await Promise.all([1, 2, 3].map((i) => sup.execute({ code: `${i} + 1` })));
  assert.deepEqual(after.map((r) => r.result), ["2", "3", "4"]);
  await closeAndCheck(sup);
});

Deno.test("without the image, workers are recycled after their request limit, replacement first", async () => {
  const sup = await Supervisor.start({
    args: ["--pool-size", "1", "--worker-request-limit", "3", "--isolation", "none"],
  });
  for (let i = 0; i < 3; i++) assert.equal((await sup.execute({ code: `${i}` })).worker_id, "w1");
  // The replacement started with the third request; w1 serves until it is ready, then leaves.
  const health = await waitFor("the replacement", async () => {
    const h = await sup.health();
    return h.workers.length === 1 && h.workers[0].id === "w2" && h.ready_workers === 1
      ? h
      : undefined;
  });
  assert.equal(health.workers[0].state, "idle");
  assert.equal((await sup.execute({ code: "'fresh'" })).worker_id, "w2");
  const stats = await sup.stats();
  assert.ok(stats.restarts.recycled >= 1);
  await closeAndCheck(sup);
});

Deno.test("with the image, the request limit renews the interpreter in place; the 10th replaces the process", async () => {
  const sup = await Supervisor.start({
    args: ["--pool-size", "1", "--worker-request-limit", "3", "--isolation", "tenant"],
  });
  const [pid] = await sup.workerPids();
  // A class changed stays for the tenant's next request (the Python-level reset keeps it).
  const marked = "import json\nhasattr(json.JSONDecoder, 'marker')";
  await sup.execute({ code: "import json\njson.JSONDecoder.marker = 1", tenant: "a" });
  assert.equal((await sup.execute({ code: marked, tenant: "a" })).result, "True");
  // The third request reaches the limit: the interpreter is put back to its image.
  await sup.execute({ code: "1", tenant: "a" });
  const renewed = await waitFor("the renewal", async () => {
    const [worker] = (await sup.health()).workers;
    return worker.renewals === 1 && worker.state === "idle" ? worker : undefined;
  });
  assert.equal(renewed.pid, pid, "the same process");
  assert.equal(renewed.served, 3);
  assert.equal((await sup.execute({ code: marked, tenant: "a" })).result, "False");
  // A session live at the limit (request 6) is parked and kept.
  await sup.execute({ code: "y = 5", tenant: "a", session_id: "s" });
  await sup.execute({ code: "y += 1", tenant: "a", session_id: "s" });
  await waitFor("the second renewal", async () => {
    const [worker] = (await sup.health()).workers;
    return worker.renewals === 2 && worker.state === "idle" ? true : undefined;
  });
  assert.equal((await sup.execute({ code: "y", tenant: "a", session_id: "s" })).result, "6");
  assert.equal((await sup.stats()).resets.renewal, 2);

  // Renewals 3 to 9 at requests 9 to 27; the limit at request 30 recycles the process, and
  // the session moves to its successor.
  for (let served = 7; served < 30; served++) {
    await sup.execute({ code: "1", tenant: "a" });
    await waitFor("idle", async () => (await sup.health()).workers.some((w) => w.state === "idle"));
  }
  const successor = await waitFor("the replacement", async () => {
    const h = await sup.health();
    return h.workers.length === 1 && h.workers[0].id === "w2" && h.ready_workers === 1
      ? h.workers[0]
      : undefined;
  });
  assert.notEqual(successor.pid, pid);
  assert.equal(successor.renewals, 0);
  const stats = await sup.stats();
  assert.equal(stats.resets.renewal, 9);
  assert.equal(stats.restarts.recycled, 1);
  const moved = await sup.execute({ code: "y", tenant: "a", session_id: "s" });
  assert.deepEqual([moved.worker_id, moved.result], ["w2", "6"]);
  await closeAndCheck(sup);
});

Deno.test("a worker killed while its replacement starts is replaced once", async () => {
  // --worker-max-rss-mb below a worker's resident memory: the worker asks to be replaced after
  // its first request. Killed before the replacement is ready, it must not get a second one.
  const sup = await Supervisor.start({
    args: ["--pool-size", "1", "--worker-max-rss-mb", "128"],
  });
  const [pid] = await sup.workerPids();
  await sup.execute({ code: "1" });
  await waitFor("the replacement starting", async () => {
    const h = await sup.health();
    return h.workers.length === 2 ? true : undefined;
  });
  Deno.kill(pid, "SIGKILL");
  await waitFor("w2 ready", async () => {
    const h = await sup.health();
    return h.workers.some((w) => w.id === "w2" && w.state === "idle") ? true : undefined;
  });
  // A second replacement would have been spawned at the kill, and be ready about as soon.
  await new Promise((r) => setTimeout(r, 3000));
  const { workers } = await sup.health();
  assert.deepEqual(workers.map((w) => w.id), ["w2"]);
  await closeAndCheck(sup);
});

Deno.test("a renewal that parks a large session is not cut short by the health check's timeout", async () => {
  // The renewal parks the live session, compressing it past --max-parked-mb: seconds for a
  // few hundred MB, like the move of the same sessions at a recycle, which had 30 s. Killed
  // at --health-check-timeout, the worker would take every session with it.
  const sup = await Supervisor.start({
    args: [
      "--pool-size",
      "1",
      "--worker-request-limit",
      "2",
      "--max-parked-mb",
      "32",
      "--health-check-timeout",
      "0.5",
    ],
  });
  const [pid] = await sup.workerPids();
  await sup.execute({ code: "kept = 1", session_id: "small" });
  const made = await sup.execute({
    code: "big = bytes(range(256)) * (300 << 12)\nlen(big)",
    session_id: "big",
    timeout_ms: 60_000,
  });
  assert.equal(made.result, String(300 << 20));
  const renewed = await waitFor("the renewal", async () => {
    const [worker] = (await sup.health()).workers;
    return worker?.state === "idle" ? worker : undefined;
  });
  assert.deepEqual([renewed.pid, renewed.renewals], [pid, 1], sup.stderr);
  const kept = await sup.execute({ code: "kept", session_id: "small" });
  assert.equal(kept.result, "1");
  await closeAndCheck(sup);
});

Deno.test("the health check replaces a hung (SIGSTOPped) worker", async () => {
  const sup = await Supervisor.start({
    args: ["--pool-size", "1", "--health-check-interval", "0.5", "--health-check-timeout", "1"],
  });
  const [stopped] = (await sup.health()).workers;
  Deno.kill(stopped.pid, "SIGSTOP");
  await waitFor("a replacement", async () => {
    const health = await sup.health();
    return health.ready_workers === 1 && health.workers[0].id !== stopped.id ? true : undefined;
  });
  assert.ok(!isAlive(stopped.pid), "the stopped worker was killed");
  const stats = await sup.stats();
  assert.equal(stats.restarts.health_check_failed, 1);
  assert.equal((await sup.execute({ code: "'healthy'" })).result, "'healthy'");
  await closeAndCheck(sup);
});

Deno.test("a worker that stops answering mid-request is killed at timeout + grace", async () => {
  const sup = await Supervisor.start({ args: ["--pool-size", "1", "--timeout-grace", "0.5"] });
  const pending = sup.execute({ code: "import time\ntime.sleep(0.2)\n'late'", timeout_ms: 500 });
  const worker = await busyWorker(sup);
  Deno.kill(worker.pid, "SIGSTOP");
  const r = await pending;
  assert.equal(r.status, "timeout");
  assert.match(r.error!.message, /killed and replaced/);
  await waitForExit([worker.pid]);
  assert.equal((await sup.execute({ code: "'next'" })).result, "'next'");
  await closeAndCheck(sup);
});

Deno.test("SIGTERM: running requests finish, queued ones get -32002, no orphans", async () => {
  const sup = await Supervisor.start({ args: ["--pool-size", "1"] });
  const pids = await sup.workerPids();
  const running = sup.request("execute", { code: "import time\ntime.sleep(0.5)\n'done'" });
  await busyWorker(sup);
  const queued = sup.request("execute", { code: "'never'" });
  await new Promise((r) => setTimeout(r, 50));
  sup.process.kill("SIGTERM");
  assert.equal(((await running).result as { result: string }).result, "'done'");
  const rejected = await queued;
  assert.equal(rejected.error?.code, -32002);
  assert.equal((await sup.process.status).code, 0);
  await waitForExit(pids);
});

Deno.test("stdin EOF: requests sent before it are still answered, then a clean exit", async () => {
  const sup = await Supervisor.start({ args: ["--pool-size", "1"] });
  const pids = await sup.workerPids();
  const answers = [1, 2, 3].map((i) => sup.execute({ code: `${i} * 10` }));
  const status = await sup.close();
  assert.deepEqual((await Promise.all(answers)).map((r) => r.result), ["10", "20", "30"]);
  assert.equal(status.code, 0);
  await waitForExit(pids);
});

Deno.test("workers exit when the supervisor is SIGKILLed, even one running a request", async () => {
  const sup = await Supervisor.start({ args: ["--pool-size", "2"] });
  const pids = await sup.workerPids();
  // Busy for a minute: it must not wait for its request to end.
  sup.request("execute", { code: "import time\ntime.sleep(60)" }).catch(() => {});
  await new Promise((r) => setTimeout(r, 200));
  sup.process.kill("SIGKILL");
  await sup.process.status;
  await waitForExit(pids, 5_000);
  await sup.stdoutClosed;
  await sup.close();
});

Deno.test("the shutdown method stops the pool when enabled", async () => {
  const sup = await Supervisor.start({ args: ["--pool-size", "1", "--allow-shutdown"] });
  const pids = await sup.workerPids();
  assert.deepEqual(await sup.call("shutdown"), { stopping: true });
  assert.equal((await sup.process.status).code, 0);
  await waitForExit(pids);
  const refused = await sup.request("execute", { code: "1" }).catch(() => undefined);
  assert.equal(refused, undefined);
  await sup.close().catch(() => {});
});

Deno.test("fresh-worker mode runs each request in a new worker", async () => {
  const sup = await Supervisor.start({ args: ["--pool-size", "1", "--use-pool=false"] });
  const first = await sup.execute({ code: "import sys\nsys.modules['__main__'].marker = 1\n'a'" });
  const second = await sup.execute({ code: "'b'" });
  assert.equal(first.status, "ok");
  assert.equal(second.status, "ok");
  assert.notEqual(first.worker_id, second.worker_id);
  // Sent at once, too: no worker takes a second request while others wait.
  const burst = await Promise.all(
    Array.from({ length: 4 }, (_, i) => sup.execute({ code: `${i}` })),
  );
  assert.equal(new Set(burst.map((r) => r.worker_id)).size, 4, JSON.stringify(burst));
  await closeAndCheck(sup);
});

Deno.test("an invalid configuration stops the start with the setting's name", async () => {
  const [executable, args] = supervisorCommand(["--pool-size", "0"]);
  const output = await new Deno.Command(executable, {
    args,
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(output.code, 2);
  assert.match(new TextDecoder().decode(output.stderr), /invalid poolSize \(flag --pool-size\)/);
  assert.equal(output.stdout.length, 0);
});

Deno.test("a misbehaving worker fails only its request: garbage, oversized, exit, fatal, hang", async () => {
  const sup = await Supervisor.start({
    args: ["--pool-size", "2", "--timeout-grace", "0.5"],
    env: { PYODIDE_POOL_FAILPOINTS: "1" },
  });
  const cases: [string, (r: Awaited<ReturnType<Supervisor["request"]>>) => void][] = [
    ["garbage", (r) => assert.equal(r.error?.data?.reason, "protocol_violation")],
    ["oversized:100000", (r) => assert.equal(r.error?.data?.reason, "protocol_violation")],
    ["exit:3", (r) => assert.equal(r.error?.data?.exit_code, 3)],
  ];
  for (const [failpoint, check] of cases) {
    const bystander = sup.execute({ code: "import time\ntime.sleep(0.3)\n'ok'" });
    const response = await sup.request("execute", { code: `#failpoint:${failpoint}` });
    assert.equal(response.error?.code, -32001, `${failpoint}: ${JSON.stringify(response)}`);
    check(response);
    assert.equal((await bystander).result, "'ok'", failpoint);
    await waitFor(
      "two ready workers",
      async () => (await sup.health()).ready_workers === 2 ? true : undefined,
    );
  }
  // An interpreter that fails right after its answer loses nothing: the answer comes first,
  // however the two reach the main thread (1 MB of output goes by postMessage, the failure
  // after it by the faster mailbox, so it can arrive first: a race, not every run has it).
  const answered = await sup.execute({
    code: "#failpoint:fatal_after_answer\nprint('x' * 1_000_000)",
  });
  assert.equal(answered.status, "ok");
  assert.equal(answered.stdout.length, 1_000_001);
  await waitFor(
    "two ready workers",
    async () => (await sup.health()).ready_workers === 2 ? true : undefined,
  );
  const hung = await sup.execute({ code: "#failpoint:hang", timeout_ms: 300 });
  assert.equal(hung.status, "timeout");
  assert.match(hung.error!.message, /killed and replaced/);
  // The restart is counted when the killed worker's exit is seen.
  const restarts = await waitFor("five restarts", async () => {
    const stats = await sup.stats();
    return Object.values(stats.restarts).reduce((a, b) => a + b, 0) >= 5
      ? stats.restarts
      : undefined;
  });
  assert.deepEqual({ ...restarts }, { protocol_violation: 2, crashed: 2, unresponsive: 1 });
  await closeAndCheck(sup);
});

Deno.test("chaos: 2,000 requests while a random worker is SIGKILLed every 50, with recycling", async () => {
  // A low request limit makes workers renew (every 5 requests) and recycle (every 50) while
  // others are being killed.
  const sup = await Supervisor.start({
    args: ["--pool-size", "3", "--max-queue", "5000", "--worker-request-limit", "5"],
  });
  const { summary } = await runChaos(sup, { requests: 2000, killEvery: 50, inFlight: 16 });
  assert.equal(summary.lost, 0);
  assert.equal(summary.duplicated, 0);
  assert.equal(summary.unexpected, 0, JSON.stringify(summary));
  assert.equal(summary.ok + summary.workerDied, 2000);
  assert.ok(summary.kills > 0);
  const stats = await sup.stats();
  assert.ok(stats.restarts.recycled > 0, JSON.stringify(stats.restarts));
  assert.ok(stats.resets.renewal > 0, JSON.stringify(stats.resets));
  await closeAndCheck(sup);
});

Deno.test("workers that keep failing to start are restarted with growing delays", async () => {
  // A plain start takes about 2.5 s: with a 1 s init timeout every start fails.
  const sup = await Supervisor.start({
    args: ["--pool-size", "1", "--use-snapshot=false", "--init-timeout", "1"],
    waitForWorkers: 0,
  });
  await new Promise((r) => setTimeout(r, 6000));
  const stats = await sup.stats();
  const health = await sup.health();
  // Delays of 0.5, 1, 2 and 4 s after 1 s attempts: at most four failures in 6 s, never a
  // hot loop.
  assert.ok(stats.restarts.start_failed >= 2, JSON.stringify(stats.restarts));
  assert.ok(stats.restarts.start_failed <= 4, JSON.stringify(stats.restarts));
  assert.equal(health.status, "unavailable");
  await closeAndCheck(sup);
});
