/**
 * Adversarial checks of the NATS gateway and instances, through real processes: a real
 * nats-server, real supervisors, and (for the hostile cases) another NATS client on the same
 * account publishing on the service's subjects.
 */

import assert from "node:assert/strict";
import { connect, headers } from "@nats-io/transport-node";
import type { ExecuteResult } from "../lib/protocol.ts";
import {
  acceptedClientIds,
  instanceIdOf,
  NatsServer,
  startGateway,
  startInstance,
  stopSupervisor,
} from "./helpers/nats_server.ts";
import type { Supervisor } from "./helpers/supervisor_process.ts";
import { procStatus, statusBytes, waitUntil } from "./helpers/processes.ts";

/** Polls `probe` every 10 ms (waitUntil's 100 ms is too coarse for a 1 s window). */
async function soon(what: string, probe: () => boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!probe()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Each client id at most once across the instances' acceptance logs. */
function assertAcceptedOnce(instances: Supervisor[]): void {
  const seen = new Map<string, number>();
  instances.forEach((instance, index) => {
    for (const id of acceptedClientIds(instance)) {
      assert.ok(!seen.has(id), `request ${id} was accepted twice (${seen.get(id)} and ${index})`);
      seen.set(id, index);
    }
  });
}

Deno.test("nats hostile: a request NATS hands a stalled instance just given up for silence is not run twice", async () => {
  await using server = await NatsServer.start();
  const stalled = await startInstance(server, { poolSize: 2 });
  const healthy = await startInstance(server);
  const gateway = await startGateway(server, { workers: 3, args: ["--log-level", "info"] });
  try {
    const stalledId = await instanceIdOf(stalled);
    stalled.process.kill("SIGSTOP");
    let responses;
    try {
      // The moment the gateway forgets it for silence, and before its ping says it is stalled:
      // its two queue-group subscriptions are still on the server.
      await soon(
        "the gateway to forget the stalled instance",
        () => gateway.stderr.includes(`instance ${stalledId} sent no heartbeat`),
      );
      responses = await Promise.all(
        Array.from(
          { length: 4 },
          (_, i) => gateway.request("execute", { code: `'w${i}'` }, `w${i}`),
        ),
      );
    } finally {
      stalled.process.kill("SIGCONT");
    }
    // Resumed, the stalled instance reads what NATS handed it meanwhile.
    await waitUntil("the stalled instance back", async () => {
      return (await gateway.health()).instances?.length === 2;
    }, 20_000);
    await new Promise((r) => setTimeout(r, 1000));
    for (const response of responses) {
      assert.ok(
        response.error === undefined || response.error.code === -32001,
        JSON.stringify(response),
      );
    }
    assertAcceptedOnce([stalled, healthy]);
  } finally {
    await gateway.close();
    await stopSupervisor(stalled);
    await stopSupervisor(healthy);
  }
});

/** Resident memory of a process, in bytes. */
function rss(pid: number): number {
  return statusBytes(procStatus(pid), "VmRSS");
}

Deno.test("nats hostile: chunk headers claiming a million chunks, from another client, do not blow up an instance's or the gateway's memory", async () => {
  await using server = await NatsServer.start();
  const instance = await startInstance(server);
  const gateway = await startGateway(server, { workers: 1 });
  const nc = await connect({ servers: server.url });
  try {
    const instanceId = await instanceIdOf(instance);
    // The gateway's reply subjects, as any client on the account sees them.
    const sub = nc.subscribe("pyodide_pool.execute", { max: 1 });
    const seen = (async () => {
      for await (const msg of sub) return msg.reply!;
    })();
    await nc.flush();
    assert.equal((await gateway.execute({ code: "1" })).result, "1");
    const inbox = (await seen)!.replace(/\.[^.]+$/, "");
    const before = { instance: rss(instance.process.pid), gateway: rss(gateway.process.pid) };
    // Each message is a hundred bytes: a first chunk of a million, with nothing in it.
    for (let i = 0; i < 64; i++) {
      const h = headers();
      h.set("Pyodide-Chunk", `bogus${i} 0 1000000`);
      nc.publish(`pyodide_pool.instance.${instanceId}.execute`, new Uint8Array(), {
        headers: h,
        reply: `${inbox}.nobody`,
      });
      nc.publish(`${inbox}.x${i}`, new Uint8Array(), { headers: h });
    }
    await nc.flush();
    // Both still serve, and neither holds much more than before.
    assert.equal((await gateway.execute({ code: "2" })).result, "2");
    const grown = {
      instance: rss(instance.process.pid) - before.instance,
      gateway: rss(gateway.process.pid) - before.gateway,
    };
    assert.ok(grown.instance < 64 << 20, `the instance grew by ${grown.instance >> 20} MB`);
    assert.ok(grown.gateway < 64 << 20, `the gateway grew by ${grown.gateway >> 20} MB`);
  } finally {
    await nc.close();
    await gateway.close();
    await stopSupervisor(instance);
  }
});

Deno.test("nats hostile: a session created through one gateway and used through a second gateway runs on the instance that holds it", async () => {
  await using server = await NatsServer.start();
  const instances = [await startInstance(server), await startInstance(server)];
  const first = await startGateway(server, { workers: 2 });
  const second = await startGateway(server, { workers: 2 });
  try {
    const created = await first.execute({ code: "x = 41", session_id: "shared" });
    const holder = created.instance_id!;
    // The holder's one worker busy with the session: the other instance is idle.
    const busy = first.execute({ code: "import time\ntime.sleep(1.5)", session_id: "shared" });
    await waitUntil("the holder busy", async () => {
      const health = await first.health();
      return health.instances?.find((i) => i.instance_id === holder)?.in_flight === 1;
    });
    const used = await second.request("execute", { code: "x + 1", session_id: "shared" });
    await busy;
    const result = used.result as ExecuteResult | undefined;
    assert.equal(result?.instance_id, holder, JSON.stringify(used));
    assert.equal(result?.result, "42", JSON.stringify(used));
  } finally {
    await first.close();
    await second.close();
    await Promise.all(instances.map(stopSupervisor));
  }
});

Deno.test("nats hostile: thousands of requests queued in the gateway when nats-server dies: each answered once, soon", async () => {
  await using server = await NatsServer.start();
  const instance = await startInstance(server);
  const gateway = await startGateway(server, { workers: 1, args: ["--max-queue", "5000"] });
  try {
    const count = 3000;
    const ids = Array.from({ length: count }, (_, i) => `q${i}`);
    const answeredAt = new Map<string, number>();
    const pending = ids.map((id) =>
      gateway.request(
        "execute",
        { code: "import time\ntime.sleep(0.05)", timeout_ms: 4000 },
        id,
      ).then((response) => {
        answeredAt.set(id, performance.now());
        return response;
      })
    );
    await waitUntil(
      "the gateway's queue to fill",
      async () => ((await gateway.stats()).gateway?.queue_depth ?? 0) > count / 2,
    );
    await server.stop();
    const stoppedAt = performance.now();
    const responses = await Promise.all(pending);
    const last = Math.max(...answeredAt.values()) - stoppedAt;
    // Waiting ones at once; one offered unacknowledged within 3 s; the running one by its deadline.
    assert.ok(last < 4000 + 2000 + 1000, `the last answer came ${last} ms after the stop`);
    const codes = new Map<string, number>();
    for (const response of responses) {
      const key = response.error ? String(response.error.code) : "result";
      codes.set(key, (codes.get(key) ?? 0) + 1);
    }
    const lines = gateway.received.filter((line) =>
      typeof line === "object" && line !== null && "id" in line
    ) as { id: string }[];
    const seen = new Map<string, number>();
    for (const line of lines) seen.set(line.id, (seen.get(line.id) ?? 0) + 1);
    for (const id of ids) assert.equal(seen.get(id), 1, `answers for ${id}`);
    assert.ok((codes.get("-32000") ?? 0) > count / 2, JSON.stringify([...codes]));
    // NATS back: the gateway serves again.
    await server.restart();
    await waitUntil("serving again", async () => {
      const response = await gateway.request("execute", { code: "'back'" });
      return (response.result as ExecuteResult | undefined)?.result === "'back'";
    }, 30_000);
  } finally {
    await gateway.close();
    await stopSupervisor(instance);
  }
});

Deno.test("nats hostile: garbage and forgeries from another client on every subject: nothing crashes or hangs, other requests are answered once, by their own instance", async () => {
  await using server = await NatsServer.start({ maxPayload: 128 * 1024 });
  const instance = await startInstance(server, { poolSize: 2 });
  const gateway = await startGateway(server, { workers: 2 });
  const nc = await connect({ servers: server.url });
  try {
    const instanceId = await instanceIdOf(instance);
    // What any client on the account sees of the gateway's requests.
    const offers: { reply: string; body: string }[] = [];
    nc.subscribe("pyodide_pool.execute", {
      callback: (_, msg) => void offers.push({ reply: msg.reply!, body: msg.string() }),
    });
    nc.subscribe(`pyodide_pool.instance.${instanceId}.execute`, {
      callback: (_, msg) => void offers.push({ reply: msg.reply!, body: msg.string() }),
    });
    await nc.flush();
    assert.equal((await gateway.execute({ code: "1" })).result, "1");
    const inbox = offers[0].reply.replace(/\.[^.]+$/, "");
    const garbage = [
      "",
      "not json",
      "[]",
      "null",
      "42",
      '{"kind":"result"}',
      '{"kind":"result","result":{"status":"ok","worker_id":7}}',
      '{"kind":"output","seq":-1,"stream":"stdout","text":"x"}',
      '{"instance_id":"../..","protocol":1,"state":"serving","free_slots":1,"ready_workers":1,"queue_depth":0}',
      '{"request_ids":' + JSON.stringify(Array.from({ length: 10_001 }, (_, i) => `r${i}`)) + "}",
      '{"request_ids":[{"x":1}]}',
      '{"session_id":' + JSON.stringify("s".repeat(1000)) + "}",
      '{"request_id":"' + "a".repeat(65) + '","params":{}}',
      '{"request_id":"zz","params":{"code":1}}',
      "x".repeat(120 * 1024),
    ];
    const subjects = [
      "pyodide_pool.execute",
      "pyodide_pool.packages",
      "pyodide_pool.heartbeat",
      "pyodide_pool.discover",
      "pyodide_pool.lookup",
      "pyodide_pool.sessions",
      ...["execute", "cancel", "ping", "health", "stats", "resend"].map((verb) =>
        `pyodide_pool.instance.${instanceId}.${verb}`
      ),
      `${inbox}.1-1`,
      `${inbox}.999999-1`,
      `${inbox}.x`,
      "$SRV.PING",
      "$SRV.INFO.pyodide_pool",
      "$SRV.STATS.pyodide_pool." + instanceId,
    ];
    const flood = async () => {
      for (const subject of subjects) {
        for (const text of garbage) {
          const reply = `_INBOX.hostile.${subject.length}`;
          nc.publish(subject, new TextEncoder().encode(text), { reply });
          nc.publish(subject, new TextEncoder().encode(text));
        }
        // Forged heartbeats: a ghost instance with room, and the real one claiming more room.
        for (const id of ["ghost", instanceId]) {
          nc.publish(
            "pyodide_pool.heartbeat",
            new TextEncoder().encode(JSON.stringify({
              instance_id: id,
              protocol: 1,
              state: "serving",
              free_slots: 1000,
              ready_workers: 1000,
              queue_depth: 0,
            })),
          );
        }
        await nc.flush();
      }
    };
    // Requests of an honest client, during the flood.
    const honest = Array.from(
      { length: 8 },
      (_, i) =>
        gateway.request(
          "execute",
          { code: `import time\ntime.sleep(0.2)\nprint('o${i}')\n'r${i}'`, stream: true },
          `h${i}`,
        ),
    );
    await flood();
    await flood();
    const responses = await Promise.all(honest);
    const alive = (s: Supervisor) => {
      try {
        s.process.kill("SIGCONT");
        return true;
      } catch {
        return false;
      }
    };
    assert.ok(alive(instance) && alive(gateway), "both still run");
    for (const s of [instance, gateway]) assert.doesNotMatch(s.stderr, /unexpected|Uncaught/);
    responses.forEach((response, i) => {
      const result = response.result as ExecuteResult | undefined;
      // A forged heartbeat's ghost may be offered a request only if the queue group has no room;
      // an honest request is answered by its own instance or refused, never by another's answer.
      if (result !== undefined) {
        assert.equal(result.result, `'r${i}'`, JSON.stringify(response));
        assert.equal(result.instance_id, instanceId);
      } else assert.ok(response.error, JSON.stringify(response));
    });
    const seen = new Map<unknown, number>();
    for (const line of gateway.received as { id?: unknown }[]) {
      if (line && typeof line === "object" && "id" in line) {
        seen.set(line.id, (seen.get(line.id) ?? 0) + 1);
      }
    }
    for (let i = 0; i < 8; i++) assert.equal(seen.get(`h${i}`), 1);
    // Both serve on once the ghost is forgotten.
    await new Promise((r) => setTimeout(r, 3500));
    assert.equal((await gateway.execute({ code: "'after'" })).result, "'after'");
    assert.equal((await instance.execute({ code: "'local'" })).result, "'local'");
    assertAcceptedOnce([instance]);
  } finally {
    await nc.close();
    await gateway.close();
    await stopSupervisor(instance);
  }
});

Deno.test("nats hostile: cancels racing completion, with streamed output: one answer each, all output before it and in order", async () => {
  await using server = await NatsServer.start({ maxPayload: 4096 });
  const instances = [await startInstance(server, { poolSize: 2 }), await startInstance(server)];
  const gateway = await startGateway(server, { workers: 3 });
  try {
    const count = 30;
    const ids = Array.from({ length: count }, (_, i) => `c${i}`);
    const pending = ids.map((id, i) =>
      gateway.request("execute", {
        // Lines of growing length: some past max_payload, so chunked between plain ones.
        code: `import time\nfor k in range(40):\n    print(f"${id}-{k}-" + "x" * (k * 150))\n` +
          `    time.sleep(${(i % 5) * 0.002})\n'${id}'`,
        stream: true,
      }, id)
    );
    for (let i = 0; i < count; i++) {
      setTimeout(() => gateway.cancel(ids[i]).catch(() => {}), Math.random() * 600);
    }
    const responses = await Promise.all(pending);
    responses.forEach((response) => {
      assert.ok(
        response.result !== undefined || response.error?.code === -32003,
        JSON.stringify(response).slice(0, 500),
      );
    });
    // In the order written: each id's output lines k = 0, 1, 2... with none after its answer.
    const next = new Map<string, number>();
    const answered = new Set<string>();
    for (const line of gateway.received as Record<string, unknown>[]) {
      if (line.method === "output") {
        const { id, text } = line.params as { id: string; text: string };
        assert.ok(!answered.has(id), `output for ${id} after its answer`);
        for (const printed of text.split("\n").filter((t) => t.length > 0)) {
          const k = Number(printed.split("-")[1]);
          assert.equal(
            k,
            next.get(id) ?? 0,
            `${id}'s output out of order: ${printed.slice(0, 20)}`,
          );
          next.set(id, k + 1);
        }
      } else if (typeof line.id === "string" && ids.includes(line.id)) {
        assert.ok(!answered.has(line.id), `two answers for ${line.id}`);
        answered.add(line.id);
      }
    }
    assert.equal(answered.size, count);
    assertAcceptedOnce(instances);
  } finally {
    await gateway.close();
    await Promise.all(instances.map(stopSupervisor));
  }
});

Deno.test("nats hostile: the only instance SIGKILLed while idle: a request just after gets -32000 no_instances soon", async () => {
  await using server = await NatsServer.start();
  const instance = await startInstance(server);
  const gateway = await startGateway(server, { workers: 1 });
  try {
    assert.equal((await gateway.execute({ code: "1" })).result, "1");
    instance.process.kill("SIGKILL");
    await instance.process.status;
    // nats-server has seen the connection close (its heartbeats stay silent for 3 s yet).
    await new Promise((r) => setTimeout(r, 200));
    const started = performance.now();
    const response = await gateway.request("execute", { code: "2" });
    const elapsed = performance.now() - started;
    assert.equal(response.error?.code, -32000, JSON.stringify(response));
    assert.equal(response.error?.data?.reason, "no_instances");
    assert.ok(elapsed < 100, `took ${elapsed} ms`);
  } finally {
    await gateway.close();
  }
});

Deno.test("nats hostile: lookups of made-up request ids from another client do not pile up in an instance", async () => {
  await using server = await NatsServer.start();
  const instance = await startInstance(server);
  const nc = await connect({ servers: server.url });
  try {
    const before = rss(instance.process.pid);
    // 600 messages of 10,000 ids each, as many as one lookup may carry: 6 million ids.
    for (let m = 0; m < 600; m++) {
      const ids = Array.from({ length: 10_000 }, (_, i) => `made-up-${m}-${i}`);
      nc.publish(
        "pyodide_pool.lookup",
        new TextEncoder().encode(JSON.stringify({ request_ids: ids })),
      );
      if (m % 20 === 19) await nc.flush();
    }
    await nc.flush();
    assert.equal((await instance.execute({ code: "'still'" })).result, "'still'");
    const grown = rss(instance.process.pid) - before;
    assert.ok(grown < 256 << 20, `the instance grew by ${grown >> 20} MB`);
  } finally {
    await nc.close();
    await stopSupervisor(instance);
  }
});

Deno.test("nats hostile: heartbeats of 20,000 made-up instances: the gateway's health and its requests stay prompt", async () => {
  await using server = await NatsServer.start();
  const instance = await startInstance(server);
  const gateway = await startGateway(server, { workers: 1 });
  const nc = await connect({ servers: server.url });
  try {
    const instanceId = await instanceIdOf(instance);
    for (let i = 0; i < 20_000; i++) {
      nc.publish(
        "pyodide_pool.heartbeat",
        new TextEncoder().encode(JSON.stringify({
          instance_id: `ghost${i}`,
          protocol: 1,
          state: "serving",
          free_slots: 5,
          ready_workers: 5,
          queue_depth: 0,
        })),
      );
      if (i % 1000 === 999) await nc.flush();
    }
    await nc.flush();
    let started = performance.now();
    assert.equal((await gateway.execute({ code: "'real'" })).result, "'real'");
    const executeMs = performance.now() - started;
    started = performance.now();
    const health = await gateway.health();
    const healthMs = performance.now() - started;
    assert.ok(executeMs < 1000, `execute took ${executeMs} ms`);
    assert.ok(healthMs < 3000, `health took ${healthMs} ms`);
    assert.ok(health.instances?.some((i) => i.instance_id === instanceId));
    // Silent, they are given up (each suspected, then cleared by "no responders"): still prompt.
    await new Promise((r) => setTimeout(r, 3500));
    started = performance.now();
    assert.equal((await gateway.execute({ code: "'again'" })).result, "'again'");
    assert.ok(performance.now() - started < 1000, `took ${performance.now() - started} ms`);
    await waitUntil(
      "the ghosts gone",
      async () => (await gateway.health()).instances?.length === 1,
    );
  } finally {
    await nc.close();
    await gateway.close();
    await stopSupervisor(instance);
  }
});

Deno.test("nats hostile: a gateway forgets idle sessions and claims after --session-ttl, as a pool does", async () => {
  await using server = await NatsServer.start();
  const gateway = await startGateway(server, { args: ["--session-ttl", "1"] });
  let instance: Supervisor | undefined;
  try {
    // Claimed for tenant "a" by a first request that never reached an instance.
    const first = await gateway.request("execute", { code: "1", session_id: "s", tenant: "a" });
    assert.equal(first.error?.code, -32000, JSON.stringify(first));
    instance = await startInstance(server);
    await waitUntil("the instance known", async () => (await gateway.health()).ready_workers === 1);
    await new Promise((r) => setTimeout(r, 1500));
    // Past the TTL the id is free, as in a local pool: tenant "b" may start a session with it.
    const other = await gateway.request("execute", { code: "2", session_id: "s", tenant: "b" });
    assert.equal((other.result as ExecuteResult | undefined)?.result, "2", JSON.stringify(other));
  } finally {
    await gateway.close();
    if (instance) await stopSupervisor(instance);
  }
});
