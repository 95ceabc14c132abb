/**
 * The pyodide-pool CLI: reads the configuration, starts the worker pool, and serves the
 * client's JSON-RPC on stdin/stdout until stdin closes or a signal asks it to stop.
 *
 * The path of a request, file by file, is in docs/architecture.md: client_endpoint.ts (entry)
 * → pool.ts (admission, dispatch) → task.ts, task_queue.ts → balancer.ts (which worker) →
 * worker_process.ts (the pipe to a worker) → worker_server.ts (the worker) → back the same way;
 * lifecycle.ts keeps the workers.
 *
 * With --nats it also serves as an instance of a NATS service (nats/instance.ts); with
 * --gateway it has no workers, and serves its client by forwarding to those instances
 * (nats/gateway.ts). With --http it also serves HTTP (http/server.ts), on either.
 *
 * @module
 */

import { ConfigError, loadConfig, redactedUrls } from "./config.ts";
import { chunksOf, LineWriter } from "../lib/framing.ts";
import { configureLogging, logger } from "../lib/logging.ts";
import { notificationMessage } from "../lib/protocol.ts";
import { createClientServer } from "./client_endpoint.ts";
import type { HttpService } from "./http/server.ts";
import type { NatsInstance } from "./nats/instance.ts";
import { Pool } from "./pool.ts";
import type { ServedPool } from "./pool_api.ts";

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
// Secrets stay out of the log.
const logged = {
  ...config,
  nats: redactedUrls(config.nats),
  natsToken: config.natsToken === undefined ? undefined : "***",
};
if (config.gateway) {
  log.info("starting a gateway to NATS service {service} (config: {config})", {
    service: config.natsService,
    config: logged,
  });
} else {
  log.info("starting {size} workers{scaling} (config: {config})", {
    size: config.usePool ? config.minWorkers : 0,
    scaling: config.usePool && config.maxWorkers > config.minWorkers
      ? `, scaling up to ${config.maxWorkers}`
      : "",
    config: logged,
  });
}

let pool: ServedPool;
/** With --nats and no --gateway: this pool as an instance of the NATS service. */
let instance: NatsInstance | undefined;
try {
  if (config.gateway) {
    // Loaded only here, as the instance below: the NATS client adds to a plain pool's memory.
    const { NatsGateway } = await import("./nats/gateway.ts");
    pool = new NatsGateway(config);
  } else if (config.nats.length > 0) {
    const { NatsInstance } = await import("./nats/instance.ts");
    const { nuid } = await import("@nats-io/transport-node");
    const local = new Pool(config, { instanceId: nuid.next() });
    instance = new NatsInstance(local, config, local.instanceId!);
    pool = local;
  } else {
    pool = new Pool(config);
  }
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
    // An instance first leaves the service: gateways send it nothing new; and new HTTP
    // connections go elsewhere (a load balancer's next instance) from now on.
    await Promise.all([instance?.leave(), http?.stopAccepting()]);
    await pool.shutdown(graceMs, { drainQueue });
    await endpoint.answered();
    // Every request is answered: what is left is writing the answers out.
    await Promise.all([instance?.close(), http?.close(HTTP_CLOSE_GRACE_MS)]);
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
    console.error(
      error instanceof ConfigError
        ? `pyodide-pool: ${error.message}`
        : `pyodide-pool: cannot listen on ${config.http}: ${(error as Error).message}`,
    );
    Deno.exit(2);
  }
}

const endpoint = config.mcp ? await mcpEndpoint() : jsonRpcEndpoint();
const http = await httpService();
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  Deno.addSignalListener(signal, () => stop(signal, false));
}

if (config.metricsPort !== undefined && pool instanceof Pool) {
  // Loaded only here: prom-client would add to every supervisor's memory.
  const { serveMetrics } = await import("./metrics.ts");
  serveMetrics(pool, config.metricsPort);
}

// Requests queue while the workers start (or the gateway finds the instances), so serving
// begins at once.
pool.start().catch((error) => {
  log.error("could not start: {error}", { error: String(error) });
  stop("start failed", false);
});
instance?.start().catch((error) => {
  log.error("could not serve NATS: {error}", { error: String(error) });
});
await endpoint.serve();
if (instance === undefined && http === undefined) {
  await stop("stdin closed", true);
} else {
  // A service's stdin is often closed from the start (/dev/null): it ends the stdio client
  // only. The pool goes on serving NATS and HTTP until a signal or `shutdown` stops it.
  log.info("stdin closed; serving{nats}{http} until SIGTERM, SIGINT or shutdown", {
    nats: instance === undefined ? "" : " NATS",
    http: http === undefined ? "" : ` HTTP on ${http.url}`,
  });
}
