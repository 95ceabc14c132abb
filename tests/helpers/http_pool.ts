/**
 * A supervisor serving HTTP (`--http 127.0.0.1:0`) for tests and benchmarks: started and
 * waited for through its stdio (tests/helpers/supervisor_process.ts), with the URL it logged,
 * and stopped with SIGTERM, since stdin's end does not stop a pool that serves HTTP.
 *
 * @module
 */

import { Supervisor } from "./supervisor_process.ts";
import { waitFor } from "./processes.ts";

export interface HttpPoolOptions {
  /** Supervisor flags besides `--http`. */
  args?: string[];
  env?: Record<string, string>;
  /** `--http` (default 127.0.0.1:0). */
  address?: string;
  /** Ready workers to wait for (default: the pool size; a gateway's are its instances'). */
  waitForWorkers?: number;
}

export class HttpPool {
  private constructor(readonly supervisor: Supervisor, readonly url: string) {}

  static async start(options: HttpPoolOptions = {}): Promise<HttpPool> {
    const supervisor = await Supervisor.start({
      args: [...(options.args ?? []), "--http", options.address ?? "127.0.0.1:0"],
      env: { PYODIDE_LOG_LEVEL: "info", ...options.env },
      waitForWorkers: options.waitForWorkers,
    });
    const url = await waitFor("the HTTP URL in the log", () => {
      return Promise.resolve(supervisor.stderr.match(/HTTP on (http:\/\/\S+?): POST/)?.[1]);
    }, 10_000);
    return new HttpPool(supervisor, url);
  }

  /** The address's port, for raw TCP clients. */
  get port(): number {
    return Number(new URL(this.url).port);
  }

  /** `POST /rpc` with a JSON body; `token` as the bearer. */
  rpc(body: unknown, token?: string, headers: Record<string, string> = {}): Promise<Response> {
    return fetch(`${this.url}/rpc`, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        ...(token ? { authorization: `Bearer ${token}` } : {}),
        ...headers,
      },
      body: typeof body === "string" ? body : JSON.stringify(body),
    });
  }

  /** One `execute` over `POST /rpc`: its parsed JSON-RPC response. */
  async execute(
    params: Record<string, unknown>,
    token?: string,
    id: string | number = 1,
  ): Promise<{ id: unknown; result?: Record<string, unknown>; error?: RpcErrorBody }> {
    const response = await this.rpc({ jsonrpc: "2.0", id, method: "execute", params }, token);
    return await response.json();
  }

  /** SIGTERM, then the exit. */
  async stop(): Promise<Deno.CommandStatus> {
    try {
      this.supervisor.process.kill("SIGTERM");
    } catch { /* already gone */ }
    return await this.supervisor.close();
  }
}

export interface RpcErrorBody {
  code: number;
  message: string;
  data?: Record<string, unknown>;
}

/** Parses a `text/event-stream` body into the JSON of its `data` lines, in order. */
export function parseEvents(text: string): unknown[] {
  return text.split("\n\n")
    .map((block) => block.split("\n").filter((line) => line.startsWith("data: ")))
    .filter((lines) => lines.length > 0)
    .map((lines) => JSON.parse(lines.map((line) => line.slice(6)).join("\n")));
}

/** Writes `request` on a new TCP connection and reads until the server closes it. */
export async function rawExchange(port: number, request: string, timeoutMs = 10_000) {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await conn.write(new TextEncoder().encode(request));
  return await readUntilClosed(conn, timeoutMs);
}

/** Reads `conn` until the server closes it; throws past `timeoutMs`. */
export async function readUntilClosed(conn: Deno.Conn, timeoutMs = 10_000): Promise<string> {
  const decoder = new TextDecoder();
  const buffer = new Uint8Array(64 * 1024);
  let text = "";
  const timer = setTimeout(() => conn.close(), timeoutMs);
  try {
    for (;;) {
      const n = await conn.read(buffer);
      if (n === null) break;
      text += decoder.decode(buffer.subarray(0, n), { stream: true });
    }
  } catch (error) {
    throw new Error(`no close within ${timeoutMs} ms (${error}); read: ${JSON.stringify(text)}`);
  } finally {
    clearTimeout(timer);
  }
  try {
    conn.close();
  } catch { /* closed */ }
  return text;
}
