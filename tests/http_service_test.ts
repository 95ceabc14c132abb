/**
 * `--http`, the rest of the service against the real supervisor on loopback: MCP over
 * Streamable HTTP with the SDK's own client, `/health`, `/metrics`, CORS, and the limits on
 * connections: slow clients (headers trickled in, bodies stalled) are closed at their
 * deadlines without holding up others, and past `--http-max-connections` a new connection is
 * answered 503.
 */

import assert from "node:assert/strict";
// The SDK's export map gives "*.js" imports no types in Deno; the hints name ones that resolve.
// @ts-types="@modelcontextprotocol/sdk/client/index"
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
// @ts-types="@modelcontextprotocol/sdk/client/streamableHttp"
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { HttpPool, rawExchange, readUntilClosed } from "./helpers/http_pool.ts";
import { parseMetrics } from "./helpers/metrics.ts";

const ALICE = "alice-token-0123456789abcdef";
const PLAIN = "plain-token-0123456789abcdef";

interface ToolOutcome {
  isError?: boolean;
  content: { type: string; text?: string }[];
}

let shared: Promise<HttpPool> | undefined;
/** A pool of 1 with tokens, CORS for one origin, and short deadlines and a small cap. */
function pool(): Promise<HttpPool> {
  shared ??= (async () => {
    const tokens = await Deno.makeTempFile({ suffix: ".tokens" });
    await Deno.writeTextFile(tokens, `alice:${ALICE}\n${PLAIN}\n`);
    return await HttpPool.start({
      args: [
        "--pool-size",
        "1",
        "--http-token-file",
        tokens,
        "--http-cors",
        "https://app.example",
        "--http-max-connections",
        "24",
        "--http-header-timeout",
        "1",
        "--http-body-timeout",
        "1",
      ],
    });
  })();
  return shared;
}

async function mcpClient(http: HttpPool, token: string) {
  const transport = new StreamableHTTPClientTransport(new URL(`${http.url}/mcp`), {
    requestInit: { headers: { authorization: `Bearer ${token}` } },
  });
  const client = new Client({ name: "pyodide-pool-http-tests", version: "1.0.0" });
  await client.connect(transport);
  return { client, transport };
}

Deno.test("HTTP MCP: the SDK's Streamable HTTP client lists and calls the tools", async () => {
  const http = await pool();
  const { client, transport } = await mcpClient(http, ALICE);
  try {
    assert.deepEqual(client.getServerVersion(), { name: "pyodide-pool", version: "0.1.0" });
    const { tools } = await client.listTools();
    assert.deepEqual(tools.map((t) => t.name).sort(), ["list_packages", "run_python"]);
    const r = await client.callTool({
      name: "run_python",
      arguments: { code: "print('hello')\n6 * 7" },
    }) as ToolOutcome;
    assert.equal(r.isError, false);
    assert.deepEqual(r.content.map((c) => c.text), [
      "status: ok",
      "stdout:\nhello\n",
      "result:\n42",
    ]);
    // A session of the tool, on alice's token: it is alice's.
    await client.callTool({ name: "run_python", arguments: { code: "k = 5", session_id: "m1" } });
    const again = await client.callTool({
      name: "run_python",
      arguments: { code: "k", session_id: "m1" },
    }) as ToolOutcome;
    assert.equal(again.content[1].text, "result:\n5");
    const stolen = await http.execute({ code: "k", session_id: "m1" }, PLAIN);
    assert.match(stolen.error!.message, /does not own session/);
    // The MCP session itself is the token's: another token is told it does not exist.
    const sessionId = transport.sessionId!;
    assert.ok(sessionId);
    const other = await fetch(`${http.url}/mcp`, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        accept: "application/json, text/event-stream",
        authorization: `Bearer ${PLAIN}`,
        "mcp-session-id": sessionId,
      },
      body: JSON.stringify({ jsonrpc: "2.0", id: 9, method: "tools/list" }),
    });
    assert.equal(other.status, 404);
    await other.body?.cancel();
    // Without a token, nothing.
    const anonymous = await fetch(`${http.url}/mcp`, { method: "POST", body: "{}" });
    assert.equal(anonymous.status, 401);
    await anonymous.body?.cancel();
  } finally {
    await transport.terminateSession().catch(() => {});
    await client.close();
  }
});

Deno.test("HTTP MCP: the spec's GET opens the session's event stream; DELETE ends the session", async () => {
  const http = await pool();
  const headers = {
    authorization: `Bearer ${PLAIN}`,
    "content-type": "application/json",
    accept: "application/json, text/event-stream",
  };
  const init = await fetch(`${http.url}/mcp`, {
    method: "POST",
    headers,
    body: JSON.stringify({
      jsonrpc: "2.0",
      id: 1,
      method: "initialize",
      params: {
        protocolVersion: "2025-06-18",
        capabilities: {},
        clientInfo: { name: "raw", version: "1" },
      },
    }),
  });
  assert.equal(init.status, 200);
  const session = init.headers.get("mcp-session-id")!;
  assert.match(session, /^[0-9a-f-]{36}$/);
  await init.body?.cancel();
  const withSession = { ...headers, "mcp-session-id": session };
  const stream = await fetch(`${http.url}/mcp`, { headers: withSession });
  assert.equal(stream.status, 200);
  assert.equal(stream.headers.get("content-type"), "text/event-stream");
  await stream.body?.cancel();
  // Without a session, GET has nothing to stream.
  const none = await fetch(`${http.url}/mcp`, { headers });
  assert.equal(none.status, 400);
  await none.body?.cancel();
  const ended = await fetch(`${http.url}/mcp`, { method: "DELETE", headers: withSession });
  assert.equal(ended.status, 200);
  await ended.body?.cancel();
  const gone = await fetch(`${http.url}/mcp`, {
    method: "POST",
    headers: withSession,
    body: JSON.stringify({ jsonrpc: "2.0", id: 2, method: "tools/list" }),
  });
  assert.equal(gone.status, 404);
  await gone.body?.cancel();
});

Deno.test("HTTP: /health for probes (sessions only with a token), /metrics with a token", async () => {
  const http = await pool();
  await http.execute({ code: "s = 1", session_id: "h1" }, PLAIN);
  const open = await fetch(`${http.url}/health`);
  assert.equal(open.status, 200);
  const report = await open.json();
  assert.equal(report.status, "ok");
  assert.equal(report.workers.length, 1);
  assert.equal(report.workers[0].sessions, undefined);
  const full = await (await fetch(`${http.url}/health`, {
    headers: { authorization: `Bearer ${PLAIN}` },
  })).json();
  assert.ok(full.workers[0].sessions.includes("h1"));

  const denied = await fetch(`${http.url}/metrics`);
  assert.equal(denied.status, 401);
  await denied.body?.cancel();
  const scrape = await fetch(`${http.url}/metrics`, {
    headers: { authorization: `Bearer ${PLAIN}` },
  });
  assert.equal(scrape.status, 200);
  assert.match(scrape.headers.get("content-type")!, /^text\/plain; version=0\.0\.4/);
  const metrics = parseMetrics(await scrape.text());
  assert.ok((metrics.get('pyodide_pool_requests_total{status="ok"}') ?? 0) >= 1);
  assert.ok((metrics.get("pyodide_pool_run_seconds_count") ?? 0) >= 1);
  assert.equal(metrics.get('pyodide_pool_workers{state="idle"}'), 1);
  // Routes and methods that are not there.
  const missing = await fetch(`${http.url}/nothing`, {
    headers: { authorization: `Bearer ${PLAIN}` },
  });
  assert.equal(missing.status, 404);
  assert.equal((await missing.json()).error.code, -32600);
  const wrongMethod = await fetch(`${http.url}/rpc`, {
    headers: { authorization: `Bearer ${PLAIN}` },
  });
  assert.equal(wrongMethod.status, 405);
  assert.equal(wrongMethod.headers.get("allow"), "POST");
  await wrongMethod.body?.cancel();
});

Deno.test("HTTP: CORS is off but for the --http-cors origin", async () => {
  const http = await pool();
  const preflight = (origin: string) =>
    fetch(`${http.url}/rpc`, {
      method: "OPTIONS",
      headers: {
        origin,
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization, content-type",
      },
    });
  const allowed = await preflight("https://app.example");
  assert.equal(allowed.status, 204);
  assert.equal(allowed.headers.get("access-control-allow-origin"), "https://app.example");
  assert.match(allowed.headers.get("access-control-allow-headers")!, /authorization/);
  const refused = await preflight("https://evil.example");
  assert.equal(refused.status, 403);
  await refused.body?.cancel();
  const call = (origin: string) =>
    http.rpc({ jsonrpc: "2.0", id: 1, method: "health" }, PLAIN, { origin });
  const fromApp = await call("https://app.example");
  assert.equal(fromApp.headers.get("access-control-allow-origin"), "https://app.example");
  await fromApp.body?.cancel();
  const fromElsewhere = await call("https://evil.example");
  assert.equal(fromElsewhere.headers.get("access-control-allow-origin"), null);
  await fromElsewhere.body?.cancel();
});

/** Opens a connection that sends a request's headers one byte every `everyMs`, forever. */
async function trickle(port: number, everyMs: number) {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const head = new TextEncoder().encode(
    "POST /rpc HTTP/1.1\r\nhost: 127.0.0.1\r\n" + "x-slow: " + "a".repeat(10_000),
  );
  let stop = false;
  const sending = (async () => {
    for (let i = 0; i < head.length && !stop; i++) {
      try {
        await conn.write(head.subarray(i, i + 1));
      } catch {
        return;
      }
      await new Promise((resolve) => setTimeout(resolve, everyMs));
    }
  })();
  return {
    /** What the server wrote before it closed the connection. */
    closed: readUntilClosed(conn, 10_000).finally(() => stop = true),
    sending,
  };
}

Deno.test("HTTP: slowloris clients do not block others, and are closed at the header timeout", async () => {
  const http = await pool();
  const started = performance.now();
  const slow = await Promise.all(Array.from({ length: 16 }, () => trickle(http.port, 50)));
  // Meanwhile others are served at once.
  for (let i = 0; i < 10; i++) {
    const t0 = performance.now();
    assert.equal((await http.execute({ code: `${i}` }, PLAIN)).result?.result, `${i}`);
    assert.ok(performance.now() - t0 < 500, `request ${i} took ${performance.now() - t0} ms`);
  }
  // Each slow one is answered 408 and closed, at the 1 s header deadline.
  const answers = await Promise.all(slow.map((s) => s.closed));
  const took = performance.now() - started;
  for (const answer of answers) assert.match(answer, /^HTTP\/1\.1 408 Request Timeout\r\n/);
  assert.ok(took >= 900 && took < 4000, `closed after ${took} ms`);
  await Promise.all(slow.map((s) => s.sending));

  // A body that stalls: 408 at the body deadline.
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: http.port });
  await conn.write(new TextEncoder().encode(
    `POST /rpc HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer ${PLAIN}\r\n` +
      'content-type: application/json\r\ncontent-length: 100\r\n\r\n{"jsonrpc":',
  ));
  assert.match(await readUntilClosed(conn, 5000), /^HTTP\/1\.1 408 /);
});

Deno.test("HTTP: past --http-max-connections a new connection gets 503, and others go on", async () => {
  const http = await pool();
  // Idle connections up to the cap (24); the gate counts them as they are accepted.
  const idle = await Promise.all(
    Array.from({ length: 24 }, () => Deno.connect({ hostname: "127.0.0.1", port: http.port })),
  );
  await new Promise((resolve) => setTimeout(resolve, 100));
  const refused = await rawExchange(
    http.port,
    "GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n",
  );
  assert.match(refused, /^HTTP\/1\.1 503 Service Unavailable\r\n/);
  assert.match(refused, /retry-after: 1\r\n/);
  assert.match(refused, /"code":-32000/);
  assert.match(refused, /"max_connections":24/);
  // The idle ones reach their header deadline and are closed, without a word (they sent
  // nothing): there is room again.
  const said = await Promise.all(idle.map((conn) => readUntilClosed(conn, 5000)));
  assert.deepEqual(new Set(said), new Set([""]));
  const health = await fetch(`${http.url}/health`);
  assert.equal(health.status, 200);
  await health.body?.cancel();
});

Deno.test("HTTP: stop the shared pool (SIGTERM: exit 0)", async () => {
  if (shared) assert.equal((await (await shared).stop()).code, 0);
});
