/**
 * Adversarial checks of the NATS gateway and instances, through real processes: a real
 * nats-server, real supervisors, and (for the hostile cases) another NATS client on the same
 * account publishing on the service's subjects.
 */

import assert from "node:assert/strict";
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
import { waitUntil } from "./helpers/processes.ts";

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
