/**
 * A pyodide-pool worker: one long-running process that loads Pyodide once and serves
 * newline-delimited JSON-RPC 2.0 on stdin/stdout (`execute`, `ping`, `stats`, `shutdown`).
 * It announces itself with a `ready` notification and exits when stdin closes, so it never
 * outlives the supervisor that spawned it. Python runs in a Web Worker (worker/); this main
 * thread keeps answering and enforces timeouts.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { LineWriter } from "./lib/framing.ts";
import { type ExecuteResult, parseExecuteParams } from "./lib/protocol.ts";
import { RpcServer } from "./lib/rpc_server.ts";
import {
  configureLogging,
  type LogFormat,
  logger as getLogger,
  type LogLevelName,
} from "./lib/logging.ts";
import { PythonHost, type RunReport } from "./worker/python_host.ts";

const { values: args } = parseArgs({
  args: Deno.args,
  options: {
    "worker-id": { type: "string", default: "w0" },
    "max-output-bytes": { type: "string", default: String(1 << 20) },
    "max-line-bytes": { type: "string", default: String(16 << 20) },
    "interrupt-grace-ms": { type: "string", default: "500" },
    "default-timeout-ms": { type: "string", default: "30000" },
    "log-level": { type: "string", default: "info" },
    "log-format": { type: "string", default: "text" },
  },
});
const workerId = args["worker-id"];
const startedAt = performance.now();
let requests = 0;

await configureLogging(args["log-level"] as LogLevelName, args["log-format"] as LogFormat);
const logger = getLogger("worker", workerId);
const log = (message: string) => logger.warn(message);
const out = new LineWriter(Deno.stdout.writable, () => Deno.exit(0));

const python = new PythonHost({
  maxOutputBytes: Number(args["max-output-bytes"]),
  interruptGraceMs: Number(args["interrupt-grace-ms"]),
  onFatal: (message) => {
    // A broken interpreter cannot be trusted with the next request: the supervisor sees the
    // exit, fails only the request in flight, and starts a replacement.
    log(`fatal: ${message}`);
    Deno.exit(70);
  },
});

function toResult(report: RunReport, timeoutMs: number, startedMs: number): ExecuteResult {
  const { stoppedBy, ...outcome } = report;
  const result: ExecuteResult = {
    ...outcome,
    duration_ms: performance.now() - startedMs,
    worker_id: workerId,
  };
  if (outcome.status === "timeout") {
    result.error = {
      type: "TimeoutError",
      message: `execution exceeded timeout_ms=${timeoutMs}; stopped by ${stoppedBy}` +
        (stoppedBy === "interpreter_restart" ? ` (${outcome.error?.message})` : ""),
      traceback: outcome.error?.traceback ?? "",
    };
  } else if (outcome.status === "output_limit") {
    result.error = {
      type: "OutputLimitError",
      message: `output exceeded the cap of ${args["max-output-bytes"]} bytes per stream`,
      traceback: outcome.error?.traceback ?? "",
    };
  }
  return result;
}

const server = new RpcServer({
  execute: async (params) => {
    const { code, stdin, timeout_ms } = parseExecuteParams(params);
    const timeoutMs = timeout_ms ?? Number(args["default-timeout-ms"]);
    const started = performance.now();
    const report = await python.run(code, stdin ?? "", timeoutMs);
    requests++;
    return toResult(report, timeoutMs, started);
  },
  ping: () => ({ worker_id: workerId, uptime_ms: performance.now() - startedAt }),
  stats: () => ({
    worker_id: workerId,
    requests,
    interpreter_restarts: python.restarts,
    heap_bytes: python.heapBytes,
    rss_bytes: Deno.memoryUsage().rss,
    uptime_ms: performance.now() - startedAt,
  }),
  shutdown: () => {
    setTimeout(async () => {
      await out.flushed();
      Deno.exit(0);
    });
    return { worker_id: workerId, stopping: true };
  },
}, {
  maxLineBytes: Number(args["max-line-bytes"]),
  onUnexpectedError: (method, error) => log(`unexpected error in ${method}: ${error}`),
});

try {
  const ready = await python.ready;
  out.write(JSON.stringify({
    jsonrpc: "2.0",
    method: "ready",
    params: {
      worker_id: workerId,
      pyodide_version: ready.pyodideVersion,
      python_version: ready.pythonVersion,
      load_ms: Math.round(ready.loadMs),
      heap_bytes: ready.heapBytes,
    },
  }));
} catch (error) {
  log(`could not start Pyodide: ${error}`);
  Deno.exit(70);
}

await server.serve(Deno.stdin.readable, out);
// stdin closed: the supervisor is gone or done with us.
python.terminate();
await out.flushed();
Deno.exit(0);
