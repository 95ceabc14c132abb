/**
 * Checks a running pool for scripts and probes: asks the supervisor's `/health` (served with
 * `--metrics-port`), prints one line, and exits 0 when the pool serves, 1 when it does not
 * (no ready worker, or shutting down), 2 when nothing answers.
 *
 *     deno task health --port 9464        # or PYODIDE_METRICS_PORT=9464 deno task health
 *
 * @module
 */

import { parseArgs } from "node:util";
import type { HealthReport } from "../lib/protocol.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    port: { type: "string", default: Deno.env.get("PYODIDE_METRICS_PORT") },
    timeout: { type: "string", default: "5" },
  },
});
if (!values.port || !/^\d+$/.test(values.port)) {
  console.error(
    "health: give the pool's metrics port: --port N or PYODIDE_METRICS_PORT (the pool must run with --metrics-port)",
  );
  Deno.exit(2);
}

const url = `http://127.0.0.1:${values.port}/health`;
let response: Response;
try {
  response = await fetch(url, { signal: AbortSignal.timeout(Number(values.timeout) * 1000) });
} catch (error) {
  console.error(`health: no answer from ${url}: ${(error as Error).message}`);
  Deno.exit(2);
}
const health = await response.json() as HealthReport;
console.log(
  `${health.status}: ${health.ready_workers} of ${health.workers.length} workers ready, ` +
    `${health.queue_depth} queued`,
);
Deno.exit(response.ok ? 0 : 1);
