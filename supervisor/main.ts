/**
 * The pyodide-pool CLI: reads the configuration, starts the worker pool, and serves the
 * client's JSON-RPC on stdin/stdout until stdin closes or a signal asks it to stop.
 *
 * The path of a request, file by file, is in docs/architecture.md: client_endpoint.ts (entry)
 * → pool.ts (admission, dispatch) → task.ts, task_queue.ts → balancer.ts (which worker) →
 * worker_process.ts (the pipe to a worker) → worker_server.ts (the worker) → back the same way;
 * lifecycle.ts keeps the workers.
 *
 * @module
 */

import { ConfigError, loadConfig } from "./config.ts";
import { chunksOf, LineWriter } from "../lib/framing.ts";
import { configureLogging, logger } from "../lib/logging.ts";
import { notificationMessage } from "../lib/protocol.ts";
import { createClientServer } from "./client_endpoint.ts";
import type { HttpService } from "./http/server.ts";
import { Pool } from "./pool.ts";

let loaded;
try {
  loaded = loadConfig(Deno.args, Deno.env.toObject());
} catch (error) {
  if (!(error instanceof ConfigError)) throw error;
  console.error(`pyodide-pool: ${error.message}`);
  Deno.exit(2);
}
if ("help" in loaded) {
  console.log(loaded.help);
  Deno.exit(0);
}
const { config } = loaded;
await configureLogging(config.logLevel, config.logFormat);
const log = logger("supervisor");
// An answer carries both streams: below twice their cap, a run that fills them cannot be sent.
if (config.maxLineBytes < 2 * config.maxOutputBytes) {
  log.warn(
    "--max-line-bytes ({line}) is below twice --max-output-bytes ({output}): answers with " +
      "that much output will be refused (-32005)",
    { line: config.maxLineBytes, output: config.maxOutputBytes },
  );
}
log.info("starting {size} workers{scaling} (config: {config})", {
  size: config.usePool ? config.minWorkers : 0,
  scaling: config.usePool && config.maxWorkers > config.minWorkers
    ? `, scaling up to ${config.maxWorkers}`
    : "",
  config,
});

let pool: Pool;
try {
  pool = new Pool(config);
} catch (error) {
  if (!(error instanceof ConfigError)) throw error;
  console.error(`pyodide-pool: ${error.message}`);
  Deno.exit(2);
}
/** One way of serving the client on stdin/stdout: plain JSON-RPC, or MCP with --mcp. */
interface Endpoint {
  /** Serves until stdin closes. */
  serve(): Promise<void>;
  /** Resolves once every request received has been answered and the answers written. */
  answered(): Promise<void>;
}

/** How long answers already made may take to reach HTTP clients once the pool stopped. */
const HTTP_CLOSE_GRACE_MS = 5_000;

let stopping: Promise<void> | undefined;
function stop(reason: string, drainQueue: boolean): Promise<void> {
  stopping ??= (async () => {
    log.info("shutting down: {reason}", { reason });
    const graceMs = config.shutdownGrace * 1000;
    // A last resort if a step below hangs: never outlive the grace period by much.
    const watchdog = setTimeout(() => {
      log.error("shutdown took too long; exiting");
      Deno.exit(1);
    }, graceMs + 10_000);
    // New HTTP connections go elsewhere (a load balancer's next instance) from now on.
    await http?.stopAccepting();
    await pool.shutdown(graceMs, { drainQueue });
    await endpoint.answered();
    // Every request is answered: what is left is writing the answers out.
    await http?.close(HTTP_CLOSE_GRACE_MS);
    clearTimeout(watchdog);
    log.info("stopped");
    Deno.exit(0);
  })();
  return stopping;
}

function jsonRpcEndpoint(): Endpoint {
  const output = new LineWriter(Deno.stdout, (error) => {
    log.warn("stdout closed ({error}); shutting down", { error: String(error) });
    stop("stdout closed", false);
  });
  const server = createClientServer({
    config,
    pool,
    requestShutdown: (reason) => stop(reason, false),
    notify: (method, params) => output.write(JSON.stringify(notificationMessage(method, params))),
  });
  return {
    serve: () => server.serve(chunksOf(Deno.stdin), output),
    answered: async () => {
      await server.settled();
      await output.flushed();
    },
  };
}

async function mcpEndpoint(): Promise<Endpoint> {
  // Loaded only here: the MCP SDK and zod would add to every plain supervisor's memory.
  const { serveMcp } = await import("./mcp_endpoint.ts");
  return await serveMcp({
    config,
    pool,
    onOutputClosed: (error) => {
      log.warn("stdout closed ({error}); shutting down", { error: String(error) });
      stop("stdout closed", false);
    },
  });
}

/** The HTTP service beside stdin/stdout (`--http`), loaded only then. */
async function httpService(): Promise<HttpService | undefined> {
  if (config.http === undefined) return undefined;
  const { startHttpService } = await import("./http/server.ts");
  try {
    return await startHttpService({
      config,
      pool,
      requestShutdown: (reason) => stop(reason, false),
    });
  } catch (error) {
    if (error instanceof ConfigError) {
      console.error(`pyodide-pool: ${error.message}`);
    } else if (error instanceof Deno.errors.NotCapable) {
      console.error(
        `pyodide-pool: cannot listen on ${config.http}: the supervisor's permission set ` +
          "(deno.json) lets it listen on loopback, 0.0.0.0 and [::] only; bind one of those, or " +
          `run it with --allow-net naming this address (${(error as Error).message})`,
      );
    } else {
      console.error(`pyodide-pool: cannot listen on ${config.http}: ${(error as Error).message}`);
    }
    Deno.exit(2);
  }
}

const http = await httpService();
const endpoint = config.mcp ? await mcpEndpoint() : jsonRpcEndpoint();
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  Deno.addSignalListener(signal, () => stop(signal, false));
}

if (config.metricsPort !== undefined) {
  // Loaded only here: prom-client would add to every supervisor's memory.
  const { serveMetrics } = await import("./metrics.ts");
  serveMetrics(pool, config.metricsPort);
}

// Requests queue while the workers start, so serving begins at once.
pool.start();
await endpoint.serve();
if (http === undefined) {
  await stop("stdin closed", true);
} else {
  // A service's stdin is often closed from the start (/dev/null): it ends the stdio client
  // only. The pool serves HTTP until a signal or `shutdown` stops it.
  log.info("stdin closed; serving HTTP on {url} until SIGTERM, SIGINT or shutdown", {
    url: http.url,
  });
}
