/**
 * The long chaos run: 10,000 requests through a pool of 3 while a random busy worker is
 * SIGKILLed every 50 responses; prints the counts. The test suite runs a 2,000-request
 * variant of the same (tests/helpers/chaos.ts).
 *
 *     deno run -A scripts/chaos.ts [--requests N] [--kill-every N] [--json]
 *
 * @module
 */

import { parseArgs } from "node:util";
import { runChaos } from "../tests/helpers/chaos.ts";
import { Supervisor } from "../tests/helpers/supervisor_process.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    requests: { type: "string", default: "10000" },
    "kill-every": { type: "string", default: "50" },
    "in-flight": { type: "string", default: "16" },
    json: { type: "boolean", default: false },
  },
});
const requests = Number(values.requests);
const pool = await Supervisor.start({
  args: ["--pool-size", "3", "--max-queue", String(requests), "--log-level", "error"],
});
const { summary, failures } = await runChaos(pool, {
  requests,
  killEvery: Number(values["kill-every"]),
  inFlight: Number(values["in-flight"]),
});
await pool.close();
if (values.json) {
  console.log(JSON.stringify({ summary, failures }, null, 2));
} else {
  for (const [key, value] of Object.entries(summary)) {
    console.log(`${key.padEnd(12)} ${typeof value === "number" ? +value.toFixed(2) : value}`);
  }
  for (const failure of failures.slice(0, 5)) console.log("failure:", JSON.stringify(failure));
}
Deno.exit(summary.lost === 0 && summary.duplicated === 0 && summary.unexpected === 0 ? 0 : 1);
