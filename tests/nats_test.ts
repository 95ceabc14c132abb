/**
 * Across hosts on NATS, end to end: a real nats-server on a free loopback port, supervisors as
 * instances of the service (`--nats`) and a gateway (`--gateway`) in front of them, talked to
 * as a client talks to a local pool. Who ran what is read from the instances' own logs (each
 * logs the requests it accepts, by the client's id): the Python code cannot leave a mark on
 * the host, since the workers are sandboxed.
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
import { type Response, type Supervisor, supervisorCommand } from "./helpers/supervisor_process.ts";
import { waitUntil } from "./helpers/processes.ts";

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
