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
