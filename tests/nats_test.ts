/**
 * Across hosts on NATS, end to end: a real nats-server on a free loopback port, supervisors as
 * instances of the service (`--nats`) and a gateway (`--gateway`) in front of them, talked to
 * as a client talks to a local pool. Who ran what is read from the instances' own logs (each
 * logs the requests it accepts, by the client's id): the Python code cannot leave a mark on
 * the host, since the workers are sandboxed.
 */

import assert from "node:assert/strict";
// The SDK's export map gives "*.js" imports no types in Deno; the hints name ones that resolve.
// @ts-types="@modelcontextprotocol/sdk/client/index"
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
// @ts-types="@modelcontextprotocol/sdk/client/stdio"
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { connect } from "@nats-io/transport-node";
import type { ExecuteResult } from "../lib/protocol.ts";
import {
  acceptedClientIds,
  instanceIdOf,
  NatsServer,
  startGateway,
  startInstance,
  stopSupervisor,
} from "./helpers/nats_server.ts";
import { type Response, type Supervisor, supervisorCommand } from "./helpers/supervisor_process.ts";
import { waitUntil } from "./helpers/processes.ts";
import { HttpPool, parseEvents } from "./helpers/http_pool.ts";

/**
 * The bound this project states for a request running on an instance that is SIGKILLed:
 * -32001 within liveness.ts's ping interval and a round trip (the instance's subjects vanish
 * with its connection), or ACK_TIMEOUT_MS (3 s) for a request NATS had handed it that it never
 * acknowledged. 3 s, plus slack for a loaded machine.
 */
const KILL_BOUND_MS = 3500;

/** The responses `supervisor` wrote with this id. */
function responsesFor(supervisor: Supervisor, id: string): Response[] {
  return supervisor.received.filter((line): line is Response =>
    typeof line === "object" && line !== null && (line as Response).id === id &&
    ("result" in line || "error" in line)
  );
}

/** Every client id in `ids` appears at most once across the instances' acceptance logs. */
function acceptedOnce(instances: Supervisor[]): Map<string, number> {
  const where = new Map<string, number>();
  instances.forEach((instance, index) => {
    for (const id of acceptedClientIds(instance)) {
      assert.ok(!where.has(id), `request ${id} was accepted twice`);
      where.set(id, index);
    }
  });
  return where;
}

Deno.test("nats: requests spread over three instances, each result names its instance", async () => {
  await using server = await NatsServer.start();
  const instances = await Promise.all([1, 2, 3].map(() => startInstance(server)));
  const gateway = await startGateway(server, { workers: 3 });
  try {
    const ids = await Promise.all(instances.map(instanceIdOf));
    const health = await gateway.health();
    assert.deepEqual(health.instances?.map((i) => i.instance_id).sort(), [...ids].sort());
    assert.equal(health.ready_workers, 3);
    // More requests than workers, each long enough to keep its worker busy: all three serve.
    const results = await Promise.all(
      Array.from(
        { length: 12 },
        (_, i) => gateway.execute({ code: `import time\ntime.sleep(0.2)\n'req-${i}'` }),
      ),
    );
    results.forEach((result, i) => {
      assert.equal(result.status, "ok");
      assert.equal(result.result, `'req-${i}'`);
      assert.ok(ids.includes(result.instance_id!), `unknown instance ${result.instance_id}`);
    });
    assert.equal(new Set(results.map((r) => r.instance_id)).size, 3);
    const where = acceptedOnce(instances);
    assert.equal(where.size, 12);
  } finally {
    await gateway.close();
    await Promise.all(instances.map(stopSupervisor));
  }
});

Deno.test("nats: with no instance at all, -32000 comes at once, with the reason", async () => {
  await using server = await NatsServer.start();
  const gateway = await startGateway(server);
  try {
    // The first call waits for the gateway to look for instances; the one timed does not.
    assert.equal((await gateway.health()).status, "unavailable");
    const started = performance.now();
    const response = await gateway.request("execute", { code: "1" });
    const elapsed = performance.now() - started;
    assert.equal(response.error?.code, -32000, JSON.stringify(response));
    assert.equal(response.error?.data?.reason, "no_instances");
    assert.match(response.error!.message, /no instance of NATS service pyodide_pool/);
    assert.ok(elapsed < 100, `took ${elapsed} ms`);
  } finally {
    await gateway.close();
  }
});

Deno.test("nats: with every worker busy, a request waits in the gateway's queue, and past it gets -32000", async () => {
  await using server = await NatsServer.start();
  const instance = await startInstance(server);
  const gateway = await startGateway(server, { workers: 1, args: ["--max-queue", "1"] });
  try {
    const long = gateway.execute({ code: "import time\ntime.sleep(1.5)\n'long'" });
    await waitUntil("the long request running", async () => {
      const health = await gateway.health();
      return health.instances?.[0].in_flight === 1;
    });
    // The one worker is busy: the next waits in the gateway (max-queue 1), the one after is refused.
    const queued = gateway.execute({ code: "'queued'" });
    await waitUntil(
      "one request queued in the gateway",
      async () => (await gateway.stats()).gateway?.queue_depth === 1,
    );
    const refused = await gateway.request("execute", { code: "'refused'" });
    assert.equal(refused.error?.code, -32000, JSON.stringify(refused));
    assert.equal(refused.error?.data?.reason, "all_busy");
    assert.equal(refused.error?.data?.max_queue, 1);
    assert.equal((await long).result, "'long'");
    assert.equal((await queued).result, "'queued'");
    // It ran once, after the long one, and the refused one never reached the instance.
    assert.deepEqual(acceptedOnce([instance]).size, 2);
    const stats = await gateway.stats();
    assert.ok(stats.gateway!.no_responders >= 2, JSON.stringify(stats.gateway));
  } finally {
    await gateway.close();
    await stopSupervisor(instance);
  }
});

Deno.test("nats: an instance SIGKILLed mid-load: every id answered once, -32001 in bounded time, nothing run twice", async () => {
  await using server = await NatsServer.start();
  const victim = await startInstance(server);
  const survivor = await startInstance(server);
  const gateway = await startGateway(server, { workers: 2 });
  try {
    const victimId = await instanceIdOf(victim);
    const survivorId = await instanceIdOf(survivor);
    const answeredAt = new Map<string, number>();
    const ids = Array.from({ length: 16 }, (_, i) => `k${i}`);
    const pending = ids.map((id, i) =>
      gateway.request("execute", { code: `import time\ntime.sleep(0.4)\n'marker-${i}'` }, id)
        .then((response) => {
          answeredAt.set(id, performance.now());
          return response;
        })
    );
    await waitUntil("a request running on the victim", async () => {
      const health = await gateway.health();
      return (health.instances?.find((i) => i.instance_id === victimId)?.in_flight ?? 0) > 0;
    });
    victim.process.kill("SIGKILL");
    const killedAt = performance.now();
    const responses = await Promise.all(pending);
    await victim.process.status;

    // Exactly one answer per id, and each says what happened to that very request.
    let died = 0;
    responses.forEach((response, i) => {
      assert.equal(responsesFor(gateway, ids[i]).length, 1, `answers for ${ids[i]}`);
      if (response.error) {
        assert.equal(response.error.code, -32001, JSON.stringify(response.error));
        assert.ok(
          response.error.data?.instance_id === victimId ||
            response.error.data?.reason === "unacknowledged",
          JSON.stringify(response.error),
        );
        const after = answeredAt.get(ids[i])! - killedAt;
        assert.ok(after < KILL_BOUND_MS, `-32001 came ${after} ms after the kill`);
        died++;
        return;
      }
      const result = response.result as ExecuteResult;
      assert.equal(result.result, `'marker-${i}'`);
      assert.ok([victimId, survivorId].includes(result.instance_id!));
    });
    assert.ok(died >= 1, "the request running on the victim got -32001");

    // At most once: no id was accepted twice, on one instance or across both; every result
    // came from the instance that accepted it; a lost request was not re-run on the survivor.
    const where = acceptedOnce([victim, survivor]);
    responses.forEach((response, i) => {
      const accepted = where.get(ids[i]);
      if (response.error?.data?.reason === "instance_lost") assert.equal(accepted, 0);
      else if (response.error) assert.notEqual(accepted, 1, `${ids[i]} ran on the survivor`);
      else {
        const result = response.result as ExecuteResult;
        assert.equal(accepted, result.instance_id === victimId ? 0 : 1, ids[i]);
      }
    });
    const stats = await gateway.stats();
    assert.equal(stats.gateway!.instances_lost, 1);
    assert.equal(stats.requests.worker_died, died);
    // The survivor serves on, and the gateway no longer counts the victim.
    assert.equal((await gateway.execute({ code: "'after'" })).instance_id, survivorId);
    assert.deepEqual((await gateway.health()).instances?.map((i) => i.instance_id), [survivorId]);
  } finally {
    await gateway.close();
    await stopSupervisor(survivor);
  }
});

Deno.test("nats: an instance joins and another leaves while the load runs: nothing fails", async () => {
  await using server = await NatsServer.start();
  const first = await startInstance(server);
  const gateway = await startGateway(server, { workers: 1 });
  let second: Supervisor | undefined;
  try {
    const firstId = await instanceIdOf(first);
    const results: ExecuteResult[] = [];
    const failures: Response[] = [];
    let stop = false;
    const stream = async (n: number) => {
      for (let i = 0; !stop; i++) {
        const response = await gateway.request("execute", {
          code: `import time\ntime.sleep(0.05)\n'${n}-${i}'`,
        });
        if (response.error) failures.push(response);
        else results.push(response.result as ExecuteResult);
      }
    };
    const streams = [stream(0), stream(1), stream(2)];
    await waitUntil("load on the first instance", () => Promise.resolve(results.length >= 3));
    second = await startInstance(server);
    const secondId = await instanceIdOf(second);
    await waitUntil(
      "the second instance serving",
      () => Promise.resolve(results.some((r) => r.instance_id === secondId)),
    );
    // The first leaves as the load goes on: what it took, it answers; the rest goes on to the second.
    assert.equal((await stopSupervisor(first)).code, 0);
    const servedBefore = results.length;
    await waitUntil(
      "load on the second alone",
      () => Promise.resolve(results.length >= servedBefore + 6),
    );
    stop = true;
    await Promise.all(streams);
    assert.deepEqual(failures, []);
    assert.ok(results.some((r) => r.instance_id === firstId));
    assert.ok(results.slice(servedBefore + 3).every((r) => r.instance_id === secondId));
    assert.ok(results.every((r) => r.status === "ok"));
    acceptedOnce([first, second]);
  } finally {
    await gateway.close();
    await stopSupervisor(first);
    if (second) await stopSupervisor(second);
  }
});

Deno.test("nats: --gateway without --nats stops the start with exit code 2 and says why", async () => {
  const [executable, args] = supervisorCommand(["--gateway"]);
  const output = await new Deno.Command(executable, { args, stdout: "piped", stderr: "piped" })
    .output();
  assert.equal(output.code, 2);
  assert.match(
    new TextDecoder().decode(output.stderr),
    /invalid gateway: it needs a NATS server \(--nats URL or PYODIDE_NATS_URL\)/,
  );
  assert.equal(output.stdout.length, 0);
});

/** The lines `supervisor` wrote for request `id`: its output notifications and its answer. */
function linesFor(supervisor: Supervisor, id: string): Record<string, unknown>[] {
  return supervisor.received.filter((line): line is Record<string, unknown> => {
    if (typeof line !== "object" || line === null) return false;
    const message = line as { id?: unknown; method?: unknown; params?: { id?: unknown } };
    return message.id === id || (message.method === "output" && message.params?.id === id);
  });
}

Deno.test("nats: through the gateway, streamed output comes in order and before the answer, and cancel reaches the instance", async () => {
  await using server = await NatsServer.start();
  const instance = await startInstance(server);
  const gateway = await startGateway(server, { workers: 1, args: ["--max-queue", "4"] });
  try {
    const instanceId = await instanceIdOf(instance);
    const streamed = await gateway.request("execute", {
      code: "import sys, time\nfor i in range(6):\n" +
        "    print(i, flush=True)\n    print(f'e{i}', file=sys.stderr, flush=True)\n" +
        "    time.sleep(0.02)\n'done'",
      stream: true,
    }, "s1");
    assert.equal((streamed.result as ExecuteResult).result, "'done'");
    const lines = linesFor(gateway, "s1");
    const answerAt = lines.findIndex((line) => line.id === "s1");
    assert.equal(answerAt, lines.length - 1, "the answer comes last");
    const outputs = lines.slice(0, answerAt).map((line) =>
      line.params as { stream: string; text: string }
    );
    const text = (stream: string) =>
      outputs.filter((o) => o.stream === stream).map((o) => o.text).join("");
    assert.equal(text("stdout"), "0\n1\n2\n3\n4\n5\n");
    assert.equal(text("stderr"), "e0\ne1\ne2\ne3\ne4\ne5\n");

    // A running request: the cancel goes to the instance, which interrupts Python.
    const running = gateway.request("execute", { code: "import time\ntime.sleep(30)" }, "c1");
    await waitUntil("c1 running", async () => {
      return (await gateway.health()).instances?.[0].in_flight === 1;
    });
    // A request queued in the gateway behind it: cancelled there, it never reaches an instance.
    const queued = gateway.request("execute", { code: "'never'" }, "c2");
    await waitUntil(
      "c2 queued in the gateway",
      async () => (await gateway.stats()).gateway?.queue_depth === 1,
    );
    await gateway.cancel("c2");
    await gateway.cancel("c1");
    const [first, second] = await Promise.all([running, queued]);
    assert.equal(first.error?.code, -32003, JSON.stringify(first));
    assert.equal(first.error?.data?.instance_id, instanceId);
    assert.equal(first.error?.data?.stopped_by, "interrupt");
    assert.equal(second.error?.code, -32003, JSON.stringify(second));
    assert.match(second.error!.message, /before it ran/);
    assert.deepEqual(acceptedClientIds(instance), ["s1", "c1"]);
  } finally {
    await gateway.close();
    await stopSupervisor(instance);
  }
});

Deno.test("nats: sessions stay on their instance; one whose instance died gets -32004", async () => {
  await using server = await NatsServer.start();
  const instances = [await startInstance(server), await startInstance(server)];
  const gateway = await startGateway(server, { workers: 2 });
  try {
    const ids = await Promise.all(instances.map(instanceIdOf));
    // Two sessions, interleaved, with requests sent before the first of each is answered.
    const runs = await Promise.all([
      gateway.execute({ code: "import time\ntime.sleep(0.2)\nn = 1", session_id: "a" }),
      gateway.execute({ code: "n += 1\nn", session_id: "a" }),
      gateway.execute({ code: "m = 10", session_id: "b", tenant: "t" }),
      gateway.execute({ code: "m += 1\nm", session_id: "b", tenant: "t" }),
    ]);
    assert.equal(runs[1].result, "2", JSON.stringify(runs[1].error));
    assert.equal(runs[3].result, "11", JSON.stringify(runs[3].error));
    const home = runs[0].instance_id!;
    assert.equal(runs[1].instance_id, home);
    assert.equal(runs[2].instance_id, runs[3].instance_id);
    for (let i = 0; i < 4; i++) {
      const again = await gateway.execute({ code: "n += 1\nn", session_id: "a" });
      assert.equal(again.instance_id, home);
      assert.equal(again.result, String(3 + i));
    }
    // Another tenant may not use a session; the gateway refuses it before any instance sees it.
    const stranger = await gateway.request("execute", { code: "m", session_id: "b" });
    assert.equal(stranger.error?.code, -32602, JSON.stringify(stranger));
    const health = await gateway.health();
    const sessionsOf = (id: string) =>
      health.workers.filter((w) => w.instance_id === id).flatMap((w) => w.sessions);
    assert.ok(sessionsOf(home).includes("a"), JSON.stringify(health.workers));

    // The instance holding "a" dies: its next request is told, once; then "a" is a new session.
    const victim = instances[ids.indexOf(home)];
    victim.process.kill("SIGKILL");
    await victim.process.status;
    await waitUntil("the gateway to see the loss", async () => {
      const now = await gateway.health();
      return !now.instances?.some((i) => i.instance_id === home);
    });
    const lost = await gateway.request("execute", { code: "n", session_id: "a" });
    assert.equal(lost.error?.code, -32004, JSON.stringify(lost));
    assert.equal(lost.error?.data?.session_id, "a");
    assert.match(lost.error!.message, new RegExp(`instance ${home}`));
    const fresh = await gateway.execute({ code: "'n' in globals()", session_id: "a" });
    assert.equal(fresh.result, "False");
    assert.notEqual(fresh.instance_id, home);
  } finally {
    await gateway.close();
    for (const instance of instances) await stopSupervisor(instance);
  }
});

Deno.test("nats: health and stats add the instances up, with one row per instance", async () => {
  await using server = await NatsServer.start();
  const instances = [
    await startInstance(server),
    await startInstance(server, { poolSize: 2 }),
  ];
  const gateway = await startGateway(server, { workers: 3 });
  try {
    const ids = await Promise.all(instances.map(instanceIdOf));
    await Promise.all(Array.from({ length: 6 }, () => gateway.execute({ code: "1" })));
    await gateway.request("execute", { code: "1 / 0" });
    const health = await gateway.health();
    assert.equal(health.status, "ok");
    assert.equal(health.ready_workers, 3);
    assert.equal(health.pool_size, 3);
    assert.deepEqual(health.instances?.map((i) => i.instance_id).sort(), [...ids].sort());
    const row = health.instances!.find((i) => i.instance_id === ids[1])!;
    assert.equal(row.ready_workers, 2);
    assert.equal(row.status, "ok");
    assert.equal(health.workers.length, 3);
    assert.deepEqual(
      health.workers.filter((w) => w.instance_id === ids[1]).map((w) => w.id),
      ["w1", "w2"],
    );
    const stats = await gateway.stats();
    // The gateway counts what its client saw; each instance, what it ran.
    assert.deepEqual(stats.requests, { ok: 6, error: 1 });
    assert.equal(stats.requests_total, 7);
    assert.equal(stats.instances?.length, 2);
    let ran = 0;
    for (const report of stats.instances!) {
      assert.ok(ids.includes(report.instance_id!));
      assert.ok(!("error" in report && typeof report.error === "string"), JSON.stringify(report));
      ran += (report as { requests_total: number }).requests_total;
    }
    assert.equal(ran, 7);
    assert.equal(stats.workers.length, 3);
    assert.equal(stats.idle_workers, 3);
    assert.equal(stats.wait.count, 7);
    assert.equal(stats.gateway?.instances, 2);
    assert.equal(stats.gateway?.late_replies, 0);
    const packages = await gateway.call("packages") as { available: unknown[] };
    assert.ok(packages.available.length > 0);
  } finally {
    await gateway.close();
    for (const instance of instances) await stopSupervisor(instance);
  }
});

Deno.test("nats: an instance that stops answering: -32001 within the bound; its late answer is dropped and counted", async () => {
  await using server = await NatsServer.start();
  const instance = await startInstance(server);
  const gateway = await startGateway(server, { workers: 1 });
  try {
    const instanceId = await instanceIdOf(instance);
    const pending = gateway.request("execute", { code: "import time\ntime.sleep(0.5)\n'late'" });
    await waitUntil("the request running", async () => {
      return (await gateway.health()).instances?.[0].in_flight === 1;
    });
    // Stopped, not dead: its connection stays open, so only unanswered pings tell.
    instance.process.kill("SIGSTOP");
    const stoppedAt = performance.now();
    let response: Response;
    try {
      response = await pending;
    } finally {
      instance.process.kill("SIGCONT");
    }
    const after = performance.now() - stoppedAt;
    assert.equal(response.error?.code, -32001, JSON.stringify(response));
    assert.equal(response.error?.data?.instance_id, instanceId);
    assert.match(String(response.error?.data?.detail), /stopped answering/);
    // liveness.ts: a ping interval, then two pings unanswered within their timeout each.
    assert.ok(after < 4000, `-32001 came ${after} ms after the stop`);
    // Resumed, the instance sends its answer: too late, dropped, counted.
    await waitUntil(
      "the late answer counted",
      async () => (await gateway.stats()).gateway?.late_replies === 1,
      20_000,
    );
    assert.equal(responsesFor(gateway, String(response.id)).length, 1);
    // And it is heard again, and serves.
    await waitUntil("the instance back", async () => (await gateway.health()).ready_workers === 1);
    assert.equal((await gateway.execute({ code: "'again'" })).instance_id, instanceId);
  } finally {
    await gateway.close();
    await stopSupervisor(instance);
  }
});

Deno.test("nats: the existing clients work through a gateway unchanged: MCP and the Python package", async () => {
  await using server = await NatsServer.start();
  const instance = await startInstance(server);
  try {
    const [command, args] = supervisorCommand(["--nats", server.url, "--gateway", "--mcp"]);
    const transport = new StdioClientTransport({
      command,
      args,
      env: { ...Deno.env.toObject(), PYODIDE_LOG_LEVEL: "warning" },
      stderr: "inherit",
    });
    const client = new Client({ name: "pyodide-pool-tests", version: "1.0.0" });
    await client.connect(transport);
    try {
      const run = await client.callTool({
        name: "run_python",
        arguments: { code: "print('hi')\n6 * 7" },
      }) as { isError?: boolean; content: { type: string; text?: string }[] };
      assert.equal(run.isError, false, JSON.stringify(run));
      const texts = run.content.map((c) => c.text);
      assert.ok(texts.includes("stdout:\nhi\n"), JSON.stringify(texts));
      assert.ok(texts.includes("result:\n42"), JSON.stringify(texts));
    } finally {
      await client.close();
    }

    const root = new URL("../", import.meta.url).pathname;
    const script = [
      "import sys",
      "from pyodide_pool import PoolClient",
      "with PoolClient(['--nats', sys.argv[1], '--gateway'], wait_for_workers=1) as pool:",
      "    seen = []",
      "    r = pool.execute('print(1)\\n6 * 7', on_output=lambda s, t: seen.append(t))",
      "    pool.execute('x = 5', session_id='p')",
      "    print(r.result, ''.join(seen).strip(), pool.execute('x * 2', session_id='p').result)",
      "    print(r.instance_id == pool.health()['instances'][0]['instance_id'])",
    ].join("\n");
    const output = await new Deno.Command("python3", {
      args: ["-c", script, server.url],
      cwd: root,
      env: { PYTHONPATH: `${root}clients/python`, PYODIDE_POOL_DENO: Deno.execPath() },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder();
    assert.equal(output.code, 0, text.decode(output.stderr));
    assert.equal(text.decode(output.stdout).trim(), "42 1 10\nTrue");
  } finally {
    await stopSupervisor(instance);
  }
});

Deno.test("nats: the instances answer $SRV.PING, $SRV.INFO and $SRV.STATS as NATS's tools expect (ADR-32)", async () => {
  await using server = await NatsServer.start();
  const instances = [await startInstance(server), await startInstance(server)];
  const gateway = await startGateway(server, { workers: 2 });
  const nc = await connect({ servers: server.url });
  try {
    const ids = await Promise.all(instances.map(instanceIdOf));
    await Promise.all(Array.from({ length: 4 }, () => gateway.execute({ code: "1" })));
    const gather = async (subject: string) => {
      const replies = [];
      for await (const msg of await nc.requestMany(subject, "", { maxWait: 1000 })) {
        replies.push(msg.json<Record<string, unknown>>());
      }
      return replies;
    };
    const pings = await gather("$SRV.PING.pyodide_pool");
    assert.deepEqual(pings.map((p) => p.id).sort(), [...ids].sort());
    for (const ping of pings) {
      assert.equal(ping.type, "io.nats.micro.v1.ping_response");
      assert.equal(ping.name, "pyodide_pool");
      assert.match(String(ping.version), /^\d+\.\d+\.\d+/);
    }
    const info = (await nc.request(`$SRV.INFO.pyodide_pool.${ids[0]}`)).json<{
      type: string;
      endpoints: { name: string; subject: string; queue_group?: string }[];
    }>();
    assert.equal(info.type, "io.nats.micro.v1.info_response");
    assert.deepEqual(
      info.endpoints.find((e) => e.name === "execute"),
      {
        name: "execute",
        subject: "pyodide_pool.execute",
        queue_group: "pyodide_pool",
        metadata: null,
      },
    );
    const stats = await gather("$SRV.STATS");
    assert.equal(stats.length, 2);
    let served = 0;
    for (const report of stats) {
      assert.equal(report.type, "io.nats.micro.v1.stats_response");
      assert.ok(!Number.isNaN(Date.parse(String(report.started))));
      const endpoints = report.endpoints as { name: string; num_requests: number }[];
      served += endpoints.find((e) => e.name === "execute")!.num_requests;
    }
    assert.equal(served, 4);
  } finally {
    await nc.close();
    await gateway.close();
    for (const instance of instances) await stopSupervisor(instance);
  }
});

Deno.test("nats: past the server's max_payload, answers and output come in chunks; a request too large for the queue group is refused, naming the limit", async () => {
  await using server = await NatsServer.start({ maxPayload: 64 << 10 });
  const instance = await startInstance(server);
  const gateway = await startGateway(server, { workers: 1 });
  try {
    // An answer of about 4 messages' worth (a file in base64), and a streamed print of 3.
    const big = await gateway.request("execute", {
      code: "open('out.bin', 'wb').write(bytes(range(256)) * 800)\n" +
        "print('x' * 150_000)\n'done'",
      stream: true,
    }, "big");
    const result = big.result as ExecuteResult;
    assert.equal(result.result, "'done'", JSON.stringify(big.error));
    assert.equal(result.files[0].size, 204_800);
    const bytes = Uint8Array.from(atob(result.files[0].content_b64!), (c) => c.charCodeAt(0));
    assert.equal(bytes[256 * 799 + 255], 255);
    const streamed = linesFor(gateway, "big").filter((line) => line.method === "output")
      .map((line) => (line.params as { text: string }).text).join("");
    assert.equal(streamed, "x".repeat(150_000) + "\n");

    // A new request too large for one message: refused at once, with the limit named.
    const files = [{ path: "in.bin", content_b64: btoa("y".repeat(100_000)) }];
    const refused = await gateway.request("execute", { code: "1", files });
    assert.equal(refused.error?.code, -32600, JSON.stringify(refused));
    assert.equal(refused.error?.data?.max_payload, 64 << 10);
    assert.match(refused.error!.message, /over the NATS server's max_payload of 65536 bytes/);
    // A session's request goes to its own instance's subject, where chunks are put together.
    await gateway.execute({ code: "n = 1", session_id: "s" });
    const pinned = await gateway.execute({
      code: "len(open('in.bin').read()) + n",
      session_id: "s",
      files,
    });
    assert.equal(pinned.result, "100001");
    assert.equal(acceptedClientIds(instance).length, 3);
  } finally {
    await gateway.close();
    await stopSupervisor(instance);
  }
});

Deno.test("nats: nats-server restarted under load: what was sent meanwhile fails cleanly, nothing hangs, the instances come back", async () => {
  await using server = await NatsServer.start();
  const instances = [await startInstance(server), await startInstance(server)];
  const gateway = await startGateway(server, { workers: 2 });
  try {
    const outcomes: Response[] = [];
    let stop = false;
    const stream = async (n: number) => {
      for (let i = 0; !stop; i++) {
        const outcome = await gateway.request("execute", {
          code: `import time\ntime.sleep(0.05)\n'${n}-${i}'`,
          timeout_ms: 5000,
        }, `l${n}-${i}`);
        outcomes.push(outcome);
        // As a client would: a moment before trying again.
        if (outcome.error) await new Promise((resolve) => setTimeout(resolve, 20));
      }
    };
    const streams = [stream(0), stream(1), stream(2)];
    await waitUntil("load running", () => Promise.resolve(outcomes.length >= 6));
    // A request that finishes while NATS is away: its answer is lost with the connection,
    // and sent again when the gateway asks after reconnecting.
    const across = gateway.request(
      "execute",
      { code: "import time\ntime.sleep(0.5)\n'across'" },
      "across",
    );
    await waitUntil(
      "it runs",
      () => Promise.resolve(instances.some((i) => acceptedClientIds(i).includes("across"))),
    );
    await server.stop();
    const downAt = outcomes.length;
    await new Promise((resolve) => setTimeout(resolve, 1500));
    await server.restart();
    await waitUntil("both instances heard again", async () => {
      return (await gateway.health()).instances?.length === 2;
    }, 20_000);
    await waitUntil(
      "load served again",
      () => Promise.resolve(outcomes.slice(downAt).filter((o) => o.result).length >= 6),
      20_000,
    );
    stop = true;
    await Promise.all(streams);
    const acrossAnswer = await across;
    assert.equal(
      (acrossAnswer.result as ExecuteResult | undefined)?.result,
      "'across'",
      JSON.stringify(acrossAnswer),
    );

    const failed = outcomes.filter((o) => o.error);
    assert.ok(failed.length > 0, "some requests were sent while NATS was away");
    for (const { error } of failed) {
      const clean = (error!.code === -32000 &&
        ["nats_disconnected", "no_instances"].includes(String(error!.data?.reason))) ||
        (error!.code === -32001 && error!.data?.reason === "unacknowledged");
      assert.ok(clean, JSON.stringify(error));
    }
    for (const { id } of outcomes) assert.equal(responsesFor(gateway, String(id)).length, 1);
    acceptedOnce(instances);
    const health = await gateway.health();
    assert.equal(health.status, "ok");
    assert.equal(health.ready_workers, 2);
  } finally {
    await gateway.close();
    for (const instance of instances) await stopSupervisor(instance);
  }
});

Deno.test("nats: an idle instance that hangs is not handed requests once the gateway gives it up", async () => {
  await using server = await NatsServer.start();
  const stalled = await startInstance(server);
  const healthy = await startInstance(server);
  const gateway = await startGateway(server, { workers: 2 });
  try {
    const stalledId = await instanceIdOf(stalled);
    const healthyId = await instanceIdOf(healthy);
    // Stopped while idle: its queue-group subscription stays on the server, which would hand it
    // requests it never sees (all of them, while the healthy instance is busy and out of the group).
    stalled.process.kill("SIGSTOP");
    try {
      await waitUntil("the gateway to give the stalled instance up", async () => {
        const health = await gateway.health();
        return health.instances?.length === 1 && health.instances[0].instance_id === healthyId;
      }, 20_000);
      const responses = await Promise.all(
        Array.from(
          { length: 6 },
          (_, i) =>
            gateway.request("execute", { code: `import time\ntime.sleep(0.1)\n'h${i}'` }, `h${i}`),
        ),
      );
      responses.forEach((response, i) => {
        assert.equal(
          (response.result as ExecuteResult | undefined)?.result,
          `'h${i}'`,
          JSON.stringify(response.error),
        );
        assert.equal((response.result as ExecuteResult).instance_id, healthyId);
      });
    } finally {
      stalled.process.kill("SIGCONT");
    }
    // Back, it is heard again and serves; it never saw the requests above.
    await waitUntil("the stalled instance back", async () => {
      return (await gateway.health()).instances?.some((i) => i.instance_id === stalledId) ?? false;
    }, 20_000);
    const where = acceptedOnce([stalled, healthy]);
    for (let i = 0; i < 6; i++) assert.equal(where.get(`h${i}`), 1);
    const after = await Promise.all(
      Array.from({ length: 4 }, () => gateway.execute({ code: "import time\ntime.sleep(0.2)" })),
    );
    assert.ok(after.every((r) => r.status === "ok"));
  } finally {
    await gateway.close();
    await stopSupervisor(stalled);
    await stopSupervisor(healthy);
  }
});

Deno.test("nats: a gateway serves HTTP as a local pool does: /rpc with its events, /health, and /metrics saying why it is empty", async () => {
  await using server = await NatsServer.start();
  const instance = await startInstance(server);
  const gateway = await HttpPool.start({
    args: ["--nats", server.url, "--gateway"],
    waitForWorkers: 1,
  });
  try {
    const response = await gateway.rpc(
      {
        jsonrpc: "2.0",
        id: 7,
        method: "execute",
        params: { code: "print('a')\nprint('b')\n6 * 7", stream: true },
      },
      undefined,
      { accept: "text/event-stream" },
    );
    const events = parseEvents(await response.text()) as Record<string, unknown>[];
    const outputs = events.filter((e) => e.method === "output");
    assert.equal(outputs.map((e) => (e.params as { text: string }).text).join(""), "a\nb\n");
    const last = events.at(-1) as { id: number; result: ExecuteResult };
    assert.equal(last.id, 7);
    assert.equal(last.result.result, "42");
    assert.equal(last.result.instance_id, await instanceIdOf(instance));
    const health = await fetch(`${gateway.url}/health`);
    assert.equal(health.status, 200);
    assert.ok(((await health.json()) as { ready_workers: number }).ready_workers >= 1);
    const metrics = await fetch(`${gateway.url}/metrics`);
    assert.equal(metrics.status, 200);
    assert.match(await metrics.text(), /^# a NATS gateway has no workers of its own/);
  } finally {
    await gateway.stop();
    await stopSupervisor(instance);
  }
});
