/**
 * `/mcp`: the Model Context Protocol over Streamable HTTP, with the SDK's web-standard transport
 * (`Request` in, `Response` out, as `Deno.serve` gives and takes them) and the same server and
 * tools as `--mcp` (mcp_endpoint.ts's `createMcpServer`).
 *
 * Each client gets a session (`Mcp-Session-Id`), made by its `initialize`: its own MCP server,
 * its token's tenant, and the stream of server messages the spec's `GET` opens. A session is
 * usable only with the token that made it; another token is told it does not exist (404), as
 * an expired one is. Sessions unused for `--session-ttl` are closed, and past the cap the least
 * recently used of the token that holds the most goes.
 *
 * @module
 */

// The SDK's export map gives "*.js" imports no types in Deno; the hints name ones that resolve.
// @ts-types="@modelcontextprotocol/sdk/server/webStandardStreamableHttp"
import { WebStandardStreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/webStandardStreamableHttp.js";
// @ts-types="@modelcontextprotocol/sdk/server/mcp"
import type { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
// @ts-types="@modelcontextprotocol/sdk/types"
import { isInitializeRequest } from "@modelcontextprotocol/sdk/types.js";
import { ErrorCode, RpcError } from "../../lib/errors.ts";
import { logger } from "../../lib/logging.ts";
import type { Config } from "../config.ts";
import { createMcpServer, type McpServerOptions } from "../mcp_endpoint.ts";
import type { Caller } from "./auth.ts";
import { type BodyBudget, readBody } from "./body.ts";
import type { GatedConnection } from "./connections.ts";
import { badRequest, refusal } from "./responses.ts";

const log = logger("http", "mcp");

export interface McpSessionsOptions {
  config: Config;
  pool: McpServerOptions["pool"];
  budget: BodyBudget;
  bodyTimeoutMs: number;
  /** Sessions open at once; past it the least recently used is closed. */
  maxSessions: number;
}

interface Session {
  transport: WebStandardStreamableHTTPServerTransport;
  server: McpServer;
  /** The token that made it (Caller.key). */
  owner: string;
  usedAt: number;
}

/** The open MCP sessions and the requests to them. */
export class McpSessions {
  /** By id, least recently used first (a session used is moved to the end). */
  #sessions = new Map<string, Session>();
  #expiry: ReturnType<typeof setInterval>;

  constructor(private readonly options: McpSessionsOptions) {
    const idleMs = options.config.sessionTtl * 1000;
    this.#expiry = setInterval(() => {
      const now = performance.now();
      for (const [id, session] of this.#sessions) {
        if (now - session.usedAt > idleMs) this.#close(id, session, "unused");
      }
    }, Math.min(idleMs, 60_000));
  }

  get size(): number {
    return this.#sessions.size;
  }

  /** Serves one request to `/mcp` (POST, GET or DELETE). */
  async handle(request: Request, caller: Caller, connection: GatedConnection): Promise<Response> {
    let parsedBody: unknown;
    if (request.method === "POST") {
      const body = await readBody(request, {
        maxBytes: this.options.config.maxLineBytes,
        timeoutMs: this.options.bodyTimeoutMs,
      }, this.options.budget);
      if ("refused" in body) {
        connection.closeAfterAnswer();
        body.refused.headers.set("connection", "close");
        return body.refused;
      }
      try {
        parsedBody = JSON.parse(body.text);
      } catch (error) {
        return refusal(
          400,
          new RpcError(ErrorCode.ParseError, "Parse error: the body is not valid JSON", {
            reason: (error as Error).message,
          }),
        );
      }
    }
    const id = request.headers.get("mcp-session-id");
    if (id !== null) {
      const session = this.#sessions.get(id);
      // Another token's session is not told apart from one that does not exist.
      if (session === undefined || session.owner !== caller.key) {
        return badRequest(404, "no such MCP session (it expired or was closed)", {
          hint: "start a new one with initialize",
        });
      }
      this.#sessions.delete(id);
      this.#sessions.set(id, session);
      session.usedAt = performance.now();
      return await session.transport.handleRequest(request, { parsedBody });
    }
    if (request.method !== "POST" || !isInitializeRequest(parsedBody)) {
      return badRequest(400, "no Mcp-Session-Id: only an initialize request starts a session", {
        hint: "send initialize first, then its Mcp-Session-Id header with every request",
      });
    }
    return await (await this.#open(caller)).handleRequest(request, { parsedBody });
  }

  /** Closes every session (the service stops). */
  async closeAll(): Promise<void> {
    clearInterval(this.#expiry);
    await Promise.all(
      [...this.#sessions].map(([id, session]) => this.#close(id, session, "stopping")),
    );
  }

  async #open(caller: Caller): Promise<WebStandardStreamableHTTPServerTransport> {
    while (this.#sessions.size >= this.options.maxSessions) {
      const [id, session] = this.#evictable();
      this.#close(id, session, "the least recently used of the token with the most, past the cap");
    }
    const server = createMcpServer({
      config: this.options.config,
      pool: this.options.pool,
      tenant: caller.tenant,
    });
    const transport: WebStandardStreamableHTTPServerTransport =
      new WebStandardStreamableHTTPServerTransport({
        sessionIdGenerator: () => crypto.randomUUID(),
        onsessioninitialized: (id) => {
          this.#sessions.set(id, {
            transport,
            server,
            owner: caller.key,
            usedAt: performance.now(),
          });
          log.debug("MCP session {id} opened ({count} open)", { id, count: this.#sessions.size });
        },
        onsessionclosed: (id) => {
          this.#sessions.delete(id);
        },
      });
    transport.onerror = (error) => log.warn("MCP transport: {error}", { error: String(error) });
    await server.connect(transport);
    return transport;
  }

  /**
   * The session to close past the cap: the least recently used of the token that holds the
   * most. So a token that opens sessions without end closes its own, never another's (with
   * the least recently used of all, one tenant could close every other tenant's sessions).
   */
  #evictable(): [string, Session] {
    const counts = new Map<string, number>();
    for (const { owner } of this.#sessions.values()) {
      counts.set(owner, (counts.get(owner) ?? 0) + 1);
    }
    let heaviest = "";
    let most = 0;
    for (const [owner, count] of counts) {
      if (count > most) [heaviest, most] = [owner, count];
    }
    for (const entry of this.#sessions) if (entry[1].owner === heaviest) return entry;
    throw new Error("no MCP session to close");
  }

  async #close(id: string, session: Session, why: string): Promise<void> {
    this.#sessions.delete(id);
    log.debug("MCP session {id} closed: {why}", { id, why });
    await session.server.close().catch(() => {});
  }
}
