/**
 * The NATS benchmark (issue 17): what one NATS hop adds, and how capacity grows with the
 * instances. A real nats-server on a free loopback port, real supervisors as instances and a
 * gateway (tests/helpers/nats_server.ts), driven over stdio as a client drives them.
 *
 * - latency: trivial requests one at a time, to one instance's own stdin (local) and through a
 *   gateway to that same instance (one NATS hop each way), in interleaved rounds; p50 and p99 of
 *   each, and the difference;
 * - throughput: requests that sleep 50 ms, many in flight, through a gateway to 1 and then to 2
 *   instances of 2 workers each. Sleeping requests take no CPU, so on 2 cores the rate follows
 *   the workers: about twice the rate with twice the instances.
 *
 *     deno task bench:nats            # table on stdout
 *     deno task bench:nats --json     # the same figures as JSON
 *
 * @module
 */

import { parseArgs } from "node:util";
import { LatencyHistogram } from "../supervisor/stats.ts";
import type { LatencySummary } from "../lib/protocol.ts";
import {
  NatsServer,
  startGateway,
  startInstance,
  stopSupervisor,
} from "../tests/helpers/nats_server.ts";
import type { Supervisor } from "../tests/helpers/supervisor_process.ts";

const { values: options } = parseArgs({
  args: Deno.args,
  options: {
    json: { type: "boolean", default: false },
    requests: { type: "string", default: "2000" },
    rounds: { type: "string", default: "4" },
    "throughput-requests": { type: "string", default: "400" },
    "in-flight": { type: "string", default: "32" },
  },
});
const progress = (message: string) => console.error(`bench:nats: ${message}`);
const TRIVIAL = { code: "x = 1 + 1" };
const SLEEPY = { code: "import time\ntime.sleep(0.05)" };

/** One request at a time, `count` of them, into `histogram`. */
async function sequential(client: Supervisor, count: number, histogram: LatencyHistogram) {
  for (let i = 0; i < count; i++) {
    const started = performance.now();
    const result = await client.execute(TRIVIAL);
    histogram.recordMs(performance.now() - started);
    if (result.status !== "ok") throw new Error(`unexpected result ${JSON.stringify(result)}`);
  }
}

/** `count` sleeping requests, `inFlight` at a time: requests per second. */
async function rate(client: Supervisor, count: number, inFlight: number): Promise<number> {
  let sent = 0;
  const lane = async () => {
    while (sent < count) {
      sent++;
      const result = await client.execute(SLEEPY);
      if (result.status !== "ok") throw new Error(`unexpected result ${JSON.stringify(result)}`);
    }
  };
  const started = performance.now();
  await Promise.all(Array.from({ length: inFlight }, lane));
  return count / ((performance.now() - started) / 1000);
}

interface Report {
  latency: {
    local: LatencySummary;
    gateway: LatencySummary;
    added_p50_ms: number;
    added_p99_ms: number;
  };
  throughput: { path: string; instances: number; workers: number; requests_per_s: number }[];
}

await using server = await NatsServer.start();
const requests = Number(options.requests);
const rounds = Number(options.rounds);
const throughputRequests = Number(options["throughput-requests"]);
const inFlight = Number(options["in-flight"]);

progress("latency: one instance of 1 worker, local and through a gateway");
const report: Report = { latency: undefined!, throughput: [] };
{
  const instance = await startInstance(server, {
    args: ["--log-level", "warning", "--worker-request-limit", "100000"],
  });
  const gateway = await startGateway(server, { workers: 1 });
  const local = new LatencyHistogram();
  const remote = new LatencyHistogram();
  // Warm both paths, then take turns, so that a slow moment of the machine falls on both.
  await sequential(instance, 200, new LatencyHistogram());
  await sequential(gateway, 200, new LatencyHistogram());
  for (let round = 0; round < rounds; round++) {
    await sequential(instance, Math.ceil(requests / rounds), local);
    await sequential(gateway, Math.ceil(requests / rounds), remote);
  }
  const [l, g] = [local.summary(), remote.summary()];
  report.latency = {
    local: l,
    gateway: g,
    added_p50_ms: Math.round((g.p50_ms - l.p50_ms) * 1000) / 1000,
    added_p99_ms: Math.round((g.p99_ms - l.p99_ms) * 1000) / 1000,
  };
  await gateway.close();
  await stopSupervisor(instance);
}

progress("throughput: requests sleeping 50 ms through a gateway, 1 then 2 instances of 2 workers");
{
  const instances = [
    await startInstance(server, { poolSize: 2, args: ["--log-level", "warning"] }),
  ];
  const gateway = await startGateway(server, { workers: 2, args: ["--max-queue", "1000"] });
  // The same instance over its own stdin, for reference: what the hop costs at this rate.
  await rate(instances[0], 40, inFlight);
  report.throughput.push({
    path: "local",
    instances: 1,
    workers: 2,
    requests_per_s: Math.round(await rate(instances[0], throughputRequests, inFlight) * 10) / 10,
  });
  for (const count of [1, 2]) {
    if (count === 2) {
      instances.push(
        await startInstance(server, { poolSize: 2, args: ["--log-level", "warning"] }),
      );
      while ((await gateway.health()).ready_workers < 4) {
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
    await rate(gateway, 40, inFlight);
    const perSecond = await rate(gateway, throughputRequests, inFlight);
    report.throughput.push({
      path: "gateway",
      instances: count,
      workers: 2 * count,
      requests_per_s: Math.round(perSecond * 10) / 10,
    });
  }
  await gateway.close();
  for (const instance of instances) await stopSupervisor(instance);
}

if (options.json) {
  console.log(JSON.stringify(report, null, 2));
} else {
  const { local, gateway, added_p50_ms, added_p99_ms } = report.latency;
  const ms = (value: number) => value.toFixed(3).padStart(9);
  console.log("latency of a trivial request, one at a time (ms)");
  console.log("                     p50        p99");
  console.log(`  local (stdin)  ${ms(local.p50_ms)}  ${ms(local.p99_ms)}`);
  console.log(`  via gateway    ${ms(gateway.p50_ms)}  ${ms(gateway.p99_ms)}`);
  console.log(`  one NATS hop   ${ms(added_p50_ms)}  ${ms(added_p99_ms)}`);
  console.log("");
  console.log(`throughput of requests sleeping 50 ms, ${inFlight} in flight`);
  for (const row of report.throughput) {
    console.log(
      `  ${row.path.padEnd(8)} ${row.instances} instance(s), ${row.workers} workers: ${
        row.requests_per_s.toFixed(1).padStart(6)
      } requests/s (at most ${(row.workers / 0.05).toFixed(0)})`,
    );
  }
}
