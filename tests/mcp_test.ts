/**
 * MCP mode (`--mcp`) end to end: the MCP SDK's own client spawns the real supervisor and calls
 * its tools. One shared server with the test package directory (for the figure stand-in) and
 * a queue of one (to see the overloaded error as a tool error).
 */

import assert from "node:assert/strict";
// The SDK's export map gives "*.js" imports no types in Deno; the hints name ones that resolve.
// @ts-types="@modelcontextprotocol/sdk/client/index"
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
// @ts-types="@modelcontextprotocol/sdk/client/stdio"
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { buildPackageDirectory } from "./helpers/packages.ts";
import { waitForExit, waitUntil } from "./helpers/processes.ts";
import { supervisorCommand } from "./helpers/supervisor_process.ts";

interface ToolOutcome {
  isError?: boolean;
  content: { type: string; text?: string; data?: string; mimeType?: string }[];
}

const packagesDir = await buildPackageDirectory();
let shared: Promise<{ client: Client; transport: StdioClientTransport }> | undefined;

function server() {
  shared ??= (async () => {
    const [command, args] = supervisorCommand([
      "--mcp",
      "--pool-size",
      "1",
      "--max-queue",
      "1",
      "--packages-dir",
      packagesDir,
    ]);
    const transport = new StdioClientTransport({
      command,
      args,
      env: { ...Deno.env.toObject(), PYODIDE_LOG_LEVEL: "warning" },
      stderr: "inherit",
    });
    const client = new Client({ name: "pyodide-pool-tests", version: "1.0.0" });
    await client.connect(transport);
    // Wait for the worker, so that timeouts below run in Python, not in the queue.
    await waitUntil("a ready worker", async () => {
      const r = await run({ code: "1" }, client);
      return !r.isError;
    });
    return { client, transport };
  })();
  return shared;
}

async function run(args: Record<string, unknown>, client?: Client): Promise<ToolOutcome> {
  client ??= (await server()).client;
  return await client.callTool({ name: "run_python", arguments: args }) as ToolOutcome;
}

const texts = (r: ToolOutcome) => r.content.filter((c) => c.type === "text").map((c) => c.text);

Deno.test("MCP: the server names itself and lists run_python and list_packages", async () => {
  const { client } = await server();
  assert.deepEqual(client.getServerVersion(), { name: "pyodide-pool", version: "0.1.0" });
  const { tools } = await client.listTools();
  assert.deepEqual(tools.map((t) => t.name).sort(), ["list_packages", "run_python"]);
  const runPython = tools.find((t) => t.name === "run_python")!;
  assert.deepEqual(runPython.inputSchema.required, ["code"]);
  assert.deepEqual(
    Object.keys(runPython.inputSchema.properties ?? {}).sort(),
    ["code", "packages", "session_id", "timeout_ms"],
  );
});

Deno.test("MCP: run_python returns stdout and the last expression's value", async () => {
  const r = await run({ code: "print('hello')\n6 * 7" });
  assert.equal(r.isError, false);
  assert.deepEqual(texts(r), ["status: ok", "stdout:\nhello\n", "result:\n42"]);
});

Deno.test("MCP: a Python exception is a tool error with the traceback", async () => {
  const r = await run({ code: "print('before')\n1 / 0" });
  assert.equal(r.isError, true);
  const [status, stdout, error] = texts(r);
  assert.equal(status, "status: error");
  assert.equal(stdout, "stdout:\nbefore\n");
  assert.match(error!, /^error: ZeroDivisionError: division by zero\nTraceback/);
});

Deno.test("MCP: a timeout is a tool error that says so", async () => {
  const r = await run({ code: "while True: pass", timeout_ms: 300 });
  assert.equal(r.isError, true);
  assert.equal(texts(r)[0], "status: timeout");
  assert.match(texts(r).join("\n"), /error: TimeoutError: execution exceeded timeout_ms=/);
  // The worker survives its timeout.
  assert.equal((await run({ code: "'again'" })).isError, false);
});

Deno.test("MCP: cancelling a call (notifications/cancelled) interrupts the running code", async () => {
  const { client } = await server();
  const controller = new AbortController();
  // A limit well past the 5 s below, so only the cancellation can free the single worker.
  const call = client.callTool(
    { name: "run_python", arguments: { code: "while True: pass", timeout_ms: 30_000 } },
    undefined,
    { signal: controller.signal },
  );
  // The worker is idle (server() waited for it), so by now the loop runs in Python.
  await new Promise((r) => setTimeout(r, 300));
  controller.abort();
  await assert.rejects(call);
  const started = Date.now();
  const r = await run({ code: "'after cancel'" });
  assert.deepEqual(texts(r), ["status: ok", "result:\n'after cancel'"]);
  assert.ok(Date.now() - started < 5000, `took ${Date.now() - started} ms`);
});

Deno.test("MCP: invalid arguments get the same limits as execute", async () => {
  const r = await run({ code: "1", session_id: "has space" });
  assert.equal(r.isError, true);
  assert.match(texts(r)[0]!, /^Invalid params: session_id must be 1-128 printable ASCII/);
  assert.match(texts(r)[0]!, /error -32602/);
});

Deno.test("MCP: a session keeps its variables across calls", async () => {
  await run({ code: "total = 40", session_id: "mcp-notebook" });
  const r = await run({ code: "total += 2\ntotal", session_id: "mcp-notebook" });
  assert.deepEqual(texts(r), ["status: ok", "result:\n42"]);
  const outside = await run({ code: "'total' in globals()" });
  assert.deepEqual(texts(outside), ["status: ok", "result:\nFalse"]);
});

Deno.test("MCP: list_packages names the loadable packages", async () => {
  const { client } = await server();
  const r = await client.callTool({ name: "list_packages", arguments: {} }) as ToolOutcome;
  assert.notEqual(r.isError, true);
  assert.match(texts(r)[0]!, /^loaded in every worker: /);
  assert.match(texts(r)[0]!, /^matplotlib 1\.0\.0$/m);
  assert.match(texts(r)[0]!, /^standin 1\.0\.0$/m);
});

Deno.test("MCP: figures come back as PNG images", async () => {
  const r = await run({
    code: "import matplotlib.pyplot as plt\nplt.figure(size=3)",
    packages: ["matplotlib"],
  });
  assert.equal(r.isError, false, JSON.stringify(r));
  const images = r.content.filter((c) => c.type === "image");
  assert.equal(images.length, 1);
  assert.equal(images[0].mimeType, "image/png");
  // Base64 of the PNG signature.
  assert.ok(images[0].data!.startsWith("iVBORw0KGgo"), images[0].data);
});

Deno.test("MCP: a full queue is a tool error naming the JSON-RPC error", async () => {
  // One worker and a queue of one: the third of three concurrent calls finds the queue full.
  const outcomes = await Promise.all(
    [0, 1, 2].map(() => run({ code: "import time\ntime.sleep(0.3)" })),
  );
  const refused = outcomes.filter((r) => r.isError);
  assert.equal(refused.length, 1, JSON.stringify(outcomes));
  assert.match(texts(refused[0])[0]!, /^overloaded: .*\(error -32000; data: \{"queue_depth"/);
});

Deno.test("MCP: the server exits on its own when the client closes stdin", async () => {
  const { client, transport } = await server();
  const pid = transport.pid!;
  const workers = await childrenOf(pid);
  assert.ok(workers.length > 0);
  const started = Date.now();
  // The SDK's close ends stdin and waits 2 s before it sends SIGTERM.
  await client.close();
  assert.ok(Date.now() - started < 2000, `took ${Date.now() - started} ms`);
  await waitForExit([pid, ...workers]);
  await Deno.remove(packagesDir, { recursive: true });
});

Deno.test("MCP: the task command of docs/clients.md works with a desktop client's bare env", async () => {
  // As in the docs' config, with this Deno instead of `npx --yes deno@2.9.6`, and without
  // `env`: the SDK then passes only HOME, PATH, SHELL, TERM, USER and LOGNAME, as desktop
  // clients do.
  const root = new URL("..", import.meta.url).pathname;
  const transport = new StdioClientTransport({
    command: Deno.execPath(),
    args: ["task", "--quiet", "--cwd", root, "start", "--mcp", "--pool-size", "1"],
    stderr: "ignore",
  });
  const client = new Client({ name: "pyodide-pool-tests", version: "1.0.0" });
  await client.connect(transport);
  const r = await client.callTool({ name: "run_python", arguments: { code: "6 * 7" } });
  assert.deepEqual(texts(r as ToolOutcome), ["status: ok", "result:\n42"]);
  await client.close();
});

/** The pids whose parent is `pid`. */
async function childrenOf(pid: number): Promise<number[]> {
  const { stdout } = await new Deno.Command("ps", { args: ["-o", "pid=", "--ppid", String(pid)] })
    .output();
  return new TextDecoder().decode(stdout).split("\n").filter((l) => l.trim()).map(Number);
}
