/**
 * The pool as a Model Context Protocol server (`--mcp`): MCP over stdin/stdout with the
 * official SDK, in place of the plain JSON-RPC endpoint (client_endpoint.ts), on the same
 * Pool. Tools: `run_python` (one `execute`) and `list_packages`. main.ts imports this module
 * only in MCP mode, so the plain supervisor never loads the SDK and zod.
 *
 * @module
 */

import process from "node:process";
// The SDK's export map sends "*.js" types to "*.js.d.ts", which does not exist, so Deno
// would type these imports as any; the hints name the extensionless paths whose types resolve.
// @ts-types="@modelcontextprotocol/sdk/server/mcp"
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
// @ts-types="@modelcontextprotocol/sdk/server/stdio"
import { StdioServerTransport } from "@modelcontextprotocol/sdk/server/stdio.js";
// @ts-types="@modelcontextprotocol/sdk/types"
import type { CallToolResult, JSONRPCMessage } from "@modelcontextprotocol/sdk/types.js";
import { z } from "zod";
import type { Config } from "./config.ts";
import { RpcError, toRpcError } from "../lib/errors.ts";
import { logger } from "../lib/logging.ts";
import { type ExecuteResult, type PackagesReport, parseExecuteParams } from "../lib/protocol.ts";
import packageJson from "../package.json" with { type: "json" };
import type { PoolApi } from "./pool_api.ts";

/** The MCP server's name and version, as clients show them; the version is package.json's. */
export const MCP_SERVER_INFO = { name: "pyodide-pool", version: packageJson.version } as const;

/** What an assistant should know before it calls the tools. */
function instructions(config: Config): string {
  const network = config.workerAllowNet.length > 0
    ? `network access only to ${config.workerAllowNet.join(", ")}`
    : "no network";
  return [
    `Runs Python 3 (Pyodide, CPython on WebAssembly) in a sandbox: ${network}, no host files,`,
    "no subprocesses. Each run_python call starts from a fresh namespace and an empty working",
    "directory unless it names a session_id; calls with the same session_id share variables.",
    "The value of the last expression is returned as `result`; open matplotlib figures come",
    "back as PNG images. Packages beyond the standard library must be listed in `packages`",
    "(see list_packages).",
  ].join(" ");
}

/** What main.ts needs from a client endpoint to serve and to stop. */
export interface McpEndpoint {
  /** Resolves when stdin ends: the client has gone. */
  serve(): Promise<void>;
  /** Resolves once every request received has been answered and the answers written. */
  answered(): Promise<void>;
}

export interface McpEndpointOptions {
  config: Config;
  /** The local pool, or the NATS gateway. */
  pool: PoolApi;
  /** Called when stdout fails (the client went away without closing stdin). */
  onOutputClosed: (error: unknown) => void;
}

const log = logger("mcp");

/** Starts serving MCP on the process's stdin/stdout. */
export async function serveMcp(
  { config, pool, onOutputClosed }: McpEndpointOptions,
): Promise<McpEndpoint> {
  const server = createMcpServer({ config, pool });
  const transport = new StdioServerTransport(process.stdin, process.stdout, {
    maxBufferSize: config.maxLineBytes,
  });
  transport.onerror = (error) => log.warn("MCP transport: {error}", { error: String(error) });
  const inputEnded = new Promise<void>((resolve) => {
    process.stdin.once("end", resolve);
    process.stdin.once("close", resolve);
  });
  process.stdout.on("error", onOutputClosed);
  await server.connect(transport);
  const tracker = trackRequests(transport);
  log.info("serving MCP on stdin/stdout ({name} {version})", MCP_SERVER_INFO);
  return {
    serve: () => inputEnded,
    answered: async () => {
      await tracker.answered();
      // The transport's send resolves once stdout took the bytes; this waits for them to leave.
      await new Promise<void>((resolve) => process.stdout.write("", () => resolve()));
    },
  };
}

export interface McpServerOptions {
  config: Config;
  pool: PoolApi;
  /** The tenant every run is for (an HTTP token's name); unset, runs are for no one. */
  tenant?: string;
}

/**
 * The MCP server with the pool's tools, for any transport: stdin/stdout here (`--mcp`), or
 * one per Streamable HTTP session (supervisor/http/mcp.ts).
 */
export function createMcpServer(options: McpServerOptions): McpServer {
  const server = new McpServer(MCP_SERVER_INFO, { instructions: instructions(options.config) });
  registerTools(server, options);
  return server;
}

/** Tool calls so far, in every server: each call's key for the pool is unique in the process. */
let calls = 0;

function registerTools(server: McpServer, { config, pool, tenant }: McpServerOptions): void {
  server.registerTool("run_python", {
    title: "Run Python",
    description: "Runs Python code in a sandboxed Pyodide interpreter and returns its stdout, " +
      "stderr, the repr() of the last expression, the error with its traceback, and matplotlib " +
      "figures as PNG images. Top-level await is allowed.",
    inputSchema: {
      code: z.string().describe("Python source to run"),
      session_id: z.string().optional().describe(
        "keep variables between calls: calls naming the same id (1-128 printable ASCII " +
          "characters) share one namespace; created on first use",
      ),
      packages: z.array(z.string()).optional().describe(
        "packages to load before the code runs (see list_packages)",
      ),
      timeout_ms: z.number().optional().describe(
        `wall-clock limit in milliseconds (default ${config.execTimeout * 1000}, at most ${
          config.maxExecTimeout * 1000
        })`,
      ),
    },
    annotations: {
      readOnlyHint: false,
      destructiveHint: false,
      openWorldHint: config.workerAllowNet.length > 0,
    },
  }, async (args, extra) => {
    let params;
    try {
      // The same validation as the JSON-RPC execute, so the limits are identical.
      params = parseExecuteParams(args);
      if (tenant !== undefined) params = { ...params, tenant };
    } catch (error) {
      return rpcErrorResult(toRpcError(error));
    }
    // The pool cancels by key; each tool call gets its own.
    const key = `mcp-${++calls}`;
    const cancel = () => pool.cancel(key);
    extra.signal.addEventListener("abort", cancel, { once: true });
    try {
      return executeResultToTool(await pool.execute(params, key), config.maxOutputBytes);
    } catch (error) {
      if (!(error instanceof RpcError)) {
        log.error("unexpected error in run_python: {error}", { error: String(error) });
      }
      return rpcErrorResult(toRpcError(error));
    } finally {
      extra.signal.removeEventListener("abort", cancel);
    }
  });

  server.registerTool("list_packages", {
    title: "List Python packages",
    description: "Lists the packages run_python can load with `packages`, and those already " +
      "loaded in every worker. The Python standard library needs no loading.",
    annotations: { readOnlyHint: true, openWorldHint: false },
  }, async () => packagesToTool(await pool.packagesReport()));
}

/**
 * An `execute` result as MCP tool content: a status line, then stdout, stderr, the result
 * and the error as text, and every figure as a PNG image. Any status but `ok` is an error.
 *
 * @example
 * ```ts ignore
 * const tool = executeResultToTool(result, 1 << 20);
 * console.log(tool.isError, tool.content[0]); // false { type: "text", text: "status: ok" }
 * ```
 */
export function executeResultToTool(result: ExecuteResult, maxOutputBytes: number): CallToolResult {
  const notes = [];
  if (result.truncated) notes.push(`output cut at ${maxOutputBytes} bytes`);
  if (result.session_moved) {
    notes.push(
      `the session moved to a new worker; names that could not move: ${
        result.session_moved.dropped.join(", ") || "none"
      }`,
    );
  }
  const text = (value: string) => ({ type: "text" as const, text: value });
  const content: CallToolResult["content"] = [
    text(`status: ${result.status}${notes.length ? ` (${notes.join("; ")})` : ""}`),
  ];
  if (result.stdout) content.push(text(`stdout:\n${result.stdout}`));
  if (result.stderr) content.push(text(`stderr:\n${result.stderr}`));
  if (result.result !== null) content.push(text(`result:\n${result.result}`));
  if (result.error) {
    const { type, message, traceback } = result.error;
    content.push(text(`error: ${type}: ${message}${traceback ? `\n${traceback}` : ""}`));
  }
  if (result.files.length > 0) {
    const files = result.files.map((f) => `${f.path} (${f.size} bytes)`);
    // Their contents are left out: the next call starts in an empty directory anyway.
    content.push(text(`files written (not kept): ${files.join(", ")}`));
  }
  for (const figure of result.figures) {
    content.push({ type: "image", data: figure.data_b64, mimeType: "image/png" });
  }
  return { content, isError: result.status !== "ok" };
}

/** A JSON-RPC error from the pool (queue full, bad params, ...) as a tool error. */
function rpcErrorResult(error: RpcError): CallToolResult {
  const data = Object.keys(error.data).length ? `; data: ${JSON.stringify(error.data)}` : "";
  return {
    content: [{ type: "text", text: `${error.message} (error ${error.code}${data})` }],
    isError: true,
  };
}

function packagesToTool(listing: PackagesReport): CallToolResult {
  if (listing.source === "none") {
    return {
      content: [{
        type: "text",
        text: "No package source is configured, so only the standard library is available " +
          "(start the pool with --packages-dir or --package-index-url to load packages).",
      }],
    };
  }
  const lines = listing.available.map((p) => `${p.name} ${p.version}`);
  return {
    content: [{
      type: "text",
      text: `loaded in every worker: ${listing.loaded.join(", ") || "none"}\n` +
        `loadable (${lines.length}):\n${lines.join("\n")}`,
    }],
  };
}

/**
 * Counts the requests the client sent that have no answer yet, so a stop can wait for them.
 * The SDK has no such hook, so this wraps the handlers it installed on the transport.
 */
function trackRequests(transport: StdioServerTransport): { answered(): Promise<void> } {
  const unanswered = new Set<string | number>();
  let wake: (() => void) | undefined;
  const settle = (id: unknown) => {
    if (unanswered.delete(id as string | number) && unanswered.size === 0) wake?.();
  };
  const deliver = transport.onmessage!;
  transport.onmessage = (message: JSONRPCMessage) => {
    if ("method" in message && "id" in message) unanswered.add(message.id);
    // A cancelled request gets no response (MCP cancellation rule).
    if ("method" in message && message.method === "notifications/cancelled") {
      settle((message.params as { requestId?: unknown } | undefined)?.requestId);
    }
    deliver(message);
  };
  const send = transport.send.bind(transport);
  transport.send = async (message: JSONRPCMessage) => {
    await send(message);
    if (!("method" in message) && "id" in message) settle(message.id);
  };
  return {
    answered: async () => {
      while (unanswered.size > 0) await new Promise<void>((resolve) => wake = resolve);
    },
  };
}
