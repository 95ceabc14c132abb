/**
 * The HTTP service (`--http HOST:PORT`): JSON-RPC (`POST /rpc`), MCP (`/mcp`), `/health`,
 * `/metrics` and the status page (`/`) on one port, beside the supervisor's stdin/stdout.
 *
 * Built on `Deno.serve`: Deno's own HTTP/1.1 server (hyper), maintained with the runtime, with
 * web-standard `Request` and `Response`, which the MCP SDK's Streamable HTTP transport takes as
 * they are. Hono, which the SDK pulls in, would add routing for five routes and nothing of what
 * the limits need. What `Deno.serve` lacks (a connection cap, a header timeout) the gate in
 * front of it adds (connections.ts).
 *
 * Each route serves on the same seams as the stdio endpoints: `/rpc` through client_endpoint.ts's
 * `createClientServer`, `/mcp` through mcp_endpoint.ts's server and tools, `/metrics` through
 * metrics.ts; so it serves whatever pool-like object those serve.
 *
 * @module
 */

import { logger } from "../../lib/logging.ts";
import type { ClientEndpointOptions } from "../client_endpoint.ts";
import type { Config } from "../config.ts";
import { isLoopbackHost, parseListenAddress } from "./address.ts";
import { type Caller, Tokens } from "./auth.ts";
import { BodyBudget } from "./body.ts";
import { ConnectionGate, type GatedConnection } from "./connections.ts";
import { badRequest, headerTimeoutText, overCapacityText, unauthorized } from "./responses.ts";
import { serveRpc } from "./rpc.ts";
import { poolMetrics } from "../metrics.ts";
import { Cors } from "./cors.ts";
import type { McpSessions } from "./mcp.ts";
import { StatusPage } from "./status_page.ts";
import { Pool } from "../pool.ts";
import type { HealthReport } from "../../lib/protocol.ts";
import { healthFor } from "../reports.ts";

const log = logger("http");

export interface HttpServiceOptions {
  config: Config;
  pool: ClientEndpointOptions["pool"];
  /** Called when a client asks the pool to shut down (`shutdown`, with `--allow-shutdown`). */
  requestShutdown: (reason: string) => void;
}

/** The running service. */
export interface HttpService {
  /** The address it listens on, as a URL (the port chosen, for port 0). */
  readonly url: string;
  /** Stops taking connections; those open are still served. */
  stopAccepting(): Promise<void>;
  /** Waits for the requests in hand to be answered (up to `graceMs`), then closes everything. */
  close(graceMs: number): Promise<void>;
}

/** MCP sessions open at once, past which the least recently used is closed. */
const MAX_MCP_SESSIONS = 1000;

/**
 * The routes that need a token (when there is a token file): all but the page itself (it holds
 * no data) and the probe (`/health`, which shows sessions only to a token).
 */
const GUARDED_PATHS = new Set(["/rpc", "/mcp", "/metrics"]);

/**
 * Starts the service. Throws a ConfigError when the token file cannot be used, and the
 * listener's error when the address cannot be bound: both stop the start.
 */
export function startHttpService(options: HttpServiceOptions): HttpService {
  const { config } = options;
  const address = parseListenAddress(config.http!);
  let tokens = config.httpTokenFile === undefined
    ? Tokens.none()
    : Tokens.load(config.httpTokenFile);
  const reloadTokens = () => {
    if (config.httpTokenFile === undefined) return;
    try {
      tokens = Tokens.load(config.httpTokenFile);
      log.info("HTTP tokens reloaded: {count} from {path}", {
        count: tokens.entries.length,
        path: config.httpTokenFile,
      });
    } catch (error) {
      log.error("HTTP tokens not reloaded, the old ones stay: {error}", {
        error: (error as Error).message,
      });
    }
  };
  // Tokens change without a restart: SIGHUP reads the file again.
  if (config.httpTokenFile !== undefined) Deno.addSignalListener("SIGHUP", reloadTokens);
  const listener = Deno.listen({ hostname: address.hostname, port: address.port });
  const budget = new BodyBudget(8 * config.maxLineBytes);
  const bodyTimeoutMs = config.httpBodyTimeout * 1000;
  const headerTimeoutMs = config.httpHeaderTimeout * 1000;
  // A page served from the loopback address with no token is what DNS rebinding reaches:
  // only requests that name a loopback host are taken then.
  const checkHost = address.loopback && !tokens.required;
  const rpcOptions = {
    endpoint: { config, pool: options.pool, requestShutdown: options.requestShutdown },
    budget,
    bodyTimeoutMs,
  };
  // From the start: the latency histograms count requests as they finish. A gateway has no
  // workers of its own, so no metrics: each instance serves its own.
  const metrics = options.pool instanceof Pool ? poolMetrics(options.pool) : undefined;
  // On the first request to /mcp: the MCP SDK and zod cost memory a pool without MCP clients
  // need not hold.
  let mcp: Promise<McpSessions> | undefined;
  const mcpSessions = () =>
    mcp ??= import("./mcp.ts").then(({ McpSessions }) =>
      new McpSessions({
        config,
        pool: options.pool,
        budget,
        bodyTimeoutMs,
        maxSessions: MAX_MCP_SESSIONS,
      })
    );
  const statusPage = new StatusPage();
  const cors = new Cors(config.httpCors);

  const route = async (
    request: Request,
    url: URL,
    caller: Caller | undefined,
    connection: GatedConnection,
  ): Promise<Response> => {
    const method = request.method;
    if (url.pathname === "/rpc") {
      if (method !== "POST") return notAllowed(["POST"]);
      return await serveRpc(request, caller!, connection, rpcOptions);
    }
    if (url.pathname === "/health") {
      if (method !== "GET" && method !== "HEAD") return notAllowed(["GET"]);
      const response = healthResponse(await options.pool.health(), caller, options.pool);
      // Tells the status page whether to ask for a token before it asks for more.
      if (tokens.required) response.headers.set("x-pyodide-pool-auth", "bearer");
      return response;
    }
    if (url.pathname === "/mcp") {
      if (method !== "GET" && method !== "POST" && method !== "DELETE") {
        return notAllowed(["POST", "GET", "DELETE"]);
      }
      return await (await mcpSessions()).handle(request, caller!, connection);
    }
    if (url.pathname === "/metrics") {
      if (method !== "GET" && method !== "HEAD") return notAllowed(["GET"]);
      if (metrics === undefined) {
        // Empty but valid: a scraper (and the status page's charts) find no series, and say why.
        return new Response(
          "# a NATS gateway has no workers of its own: scrape each instance's metrics\n",
          { headers: { "content-type": "text/plain; version=0.0.4; charset=utf-8" } },
        );
      }
      await metrics.refresh();
      return new Response(await metrics.registry.metrics(), {
        headers: { "content-type": metrics.registry.contentType },
      });
    }
    if (url.pathname === "/" || url.pathname === "/index.html") {
      if (method !== "GET" && method !== "HEAD") return notAllowed(["GET"]);
      return await statusPage.response();
    }
    return badRequest(404, `no route ${url.pathname}`, {
      path: url.pathname,
      routes: ["POST /rpc", "POST /mcp", "GET /mcp", "GET /health", "GET /metrics", "GET /"],
    });
  };

  const handler = async (request: Request, info: Deno.ServeHandlerInfo<Deno.NetAddr>) => {
    const connection = gate.connectionOf(info.remoteAddr);
    if (connection === undefined) {
      // Someone reached the internal port directly, past the gate's limits.
      return badRequest(403, "connect through the service's own address");
    }
    connection.requestStarted();
    info.completed.catch(() => {}).finally(() => connection.requestEnded());
    const started = performance.now();
    let url: URL;
    try {
      url = new URL(request.url);
    } catch {
      // A Host header that makes no URL ("a b", "["): the client's mistake, not the service's.
      return badRequest(400, "the Host header is not a valid host", {
        host: request.headers.get("host"),
      });
    }
    let response: Response;
    try {
      if (checkHost && !isLoopbackHost(request.headers.get("host"))) {
        response = badRequest(421, "the Host header must name a loopback address", {
          host: request.headers.get("host"),
          hint: "without --http-token-file the service answers only requests for 127.0.0.1, " +
            "localhost or [::1] (a defence against DNS rebinding)",
        });
      } else if (request.method === "OPTIONS") {
        // A preflight carries no token: what it asks is only whether the origin may call.
        response = cors.preflight(request);
      } else {
        const caller = tokens.check(request.headers.get("authorization"));
        response = caller === undefined && GUARDED_PATHS.has(url.pathname)
          ? unauthorized()
          : await route(request, url, caller, connection);
        response = cors.allow(request, response);
      }
    } catch (error) {
      log.error("HTTP {method} {path} failed: {error}", {
        method: request.method,
        path: url.pathname,
        error: String(error),
      });
      response = badRequest(500, "the service failed to answer; please report it", {
        reason: String(error),
      });
    }
    log.debug("{method} {path} {status} in {ms} ms from {remote}", {
      method: request.method,
      path: url.pathname,
      status: response.status,
      ms: (performance.now() - started).toFixed(1),
      remote: connection.remote,
    });
    return response;
  };

  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    onListen: () => {},
    onError: (error) => {
      log.error("HTTP server error: {error}", { error: String(error) });
      return badRequest(500, "the service failed to answer; please report it");
    },
  }, handler);
  const gate = new ConnectionGate({
    listener,
    upstreamPort: server.addr.port,
    maxConnections: config.httpMaxConnections,
    headerTimeoutMs,
    sendTimeoutMs: config.httpSendTimeout * 1000,
    overCapacity: (open) => overCapacityText(open, config.httpMaxConnections),
    headerTimedOut: () => headerTimeoutText(headerTimeoutMs),
  });
  gate.start();
  const { hostname, port } = listener.addr;
  const url = `http://${hostname.includes(":") ? `[${hostname}]` : hostname}:${port}`;
  log.info("HTTP on {url}: POST /rpc, /mcp, /health, /metrics, / (tokens: {tokens})", {
    url,
    tokens: tokens.required ? `${tokens.entries.length} from the token file` : "none needed",
  });

  let closing: Promise<void> | undefined;
  return {
    url,
    stopAccepting: () => gate.stopAccepting(),
    close: (graceMs) =>
      closing ??= (async () => {
        await gate.stopAccepting();
        if (config.httpTokenFile !== undefined) {
          Deno.removeSignalListener("SIGHUP", reloadTokens);
        }
        // Every call was answered (the pool stopped first): the streams the sessions hold open
        // would otherwise keep the server from closing.
        await (await mcp)?.closeAll();
        const shutdown = server.shutdown();
        let timer: ReturnType<typeof setTimeout> | undefined;
        const graceEnded = new Promise<void>((resolve) => timer = setTimeout(resolve, graceMs));
        // The HTTP server is done once it wrote its answers to the gate, which may still be
        // relaying them: each connection ends when its last bytes reached the client.
        await Promise.race([shutdown.then(() => gate.closed()), graceEnded]);
        clearTimeout(timer);
        gate.abortAll();
        await shutdown;
      })(),
  };
}

function notAllowed(methods: string[]): Response {
  return badRequest(405, `use ${methods.join(" or ")}`, { allowed: methods }, {
    allow: methods.join(", "),
  });
}

/**
 * 200 while the pool serves (`ok`, `degraded`), 503 when it cannot; sessions only with a token,
 * and with a named token only its tenant's.
 */
function healthResponse(
  health: HealthReport,
  caller: Caller | undefined,
  pool: HttpServiceOptions["pool"],
): Response {
  const serving = health.status === "ok" || health.status === "degraded";
  // Session ids name other callers' state: a probe without a token does not see them.
  const body = caller !== undefined ? healthFor(health, caller.tenant, pool) : {
    ...health,
    workers: health.workers.map(({ sessions: _, ...worker }) => worker),
  };
  return Response.json(body, { status: serving ? 200 : 503 });
}
