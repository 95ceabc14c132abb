/**
 * The worker's Deno permissions: the narrowest set that works, and the opt-in network mode
 * that lets Python reach the named hosts only.
 */

import assert from "node:assert/strict";
import { loadConfig } from "../../supervisor/config.ts";
import { Supervisor } from "../helpers/supervisor_process.ts";
import { buildWorkerCommand, pyodideDirectory } from "../../supervisor/worker_command.ts";

function config(argv: string[]) {
  const loaded = loadConfig(argv, {});
  if (!("config" in loaded)) throw new Error("expected a config");
  return loaded.config;
}

Deno.test("workers run with the narrowest permissions, and no network by default", () => {
  const { args, readable } = buildWorkerCommand(config([]));
  for (
    const flag of [
      "--deny-write",
      "--deny-net",
      "--deny-run",
      "--deny-env",
      "--deny-ffi",
      "--deny-sys",
      "--deny-import",
      "--no-prompt",
      "--no-remote",
      "--cached-only",
    ]
  ) {
    assert.ok(args.includes(flag), flag);
  }
  assert.ok(!args.some((a) => a.startsWith("--allow-net") || a === "-A" || a === "--allow-all"));
  const allowRead = args.find((a) => a.startsWith("--allow-read="))!;
  assert.deepEqual(allowRead.slice("--allow-read=".length).split(","), readable);
  assert.equal(readable[0], pyodideDirectory());
  assert.equal(readable.length, 2);
});

Deno.test("network mode allows the named hosts only", () => {
  const { args } = buildWorkerCommand(config(["--worker-allow-net", "127.0.0.1:8000,example.org"]));
  assert.ok(args.includes("--allow-net=127.0.0.1:8000,example.org"));
  assert.ok(!args.includes("--deny-net"));
  assert.ok(args.includes("--allow-network"));
});

Deno.test("in network mode Python fetches from an allowed host, and from no other", async () => {
  const allowed = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    () => new Response("hello from loopback"),
  );
  const other = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    () => new Response("should not be reached"),
  );
  const pool = await Supervisor.start({
    args: ["--pool-size", "1", "--worker-allow-net", `127.0.0.1:${allowed.addr.port}`],
  });
  try {
    const fetch = (port: number) =>
      pool.execute({
        code:
          `from pyodide.http import pyfetch\nr = await pyfetch('http://127.0.0.1:${port}/')\nawait r.string()`,
      });
    const ok = await fetch(allowed.addr.port);
    assert.equal(ok.status, "ok", JSON.stringify(ok.error));
    assert.equal(ok.result, "'hello from loopback'");
    const denied = await fetch(other.addr.port);
    assert.equal(denied.status, "error");
  } finally {
    await pool.close();
    await allowed.shutdown();
    await other.shutdown();
  }
});

Deno.test("in network mode a fetch ends with the request that made it", async () => {
  // Answers after a second: by then the request that asked is over.
  const slow = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    async () => {
      await new Promise((resolve) => setTimeout(resolve, 1000));
      return new Response("late");
    },
  );
  const pool = await Supervisor.start({
    args: ["--pool-size", "1", "--worker-allow-net", `127.0.0.1:${slow.addr.port}`],
  });
  try {
    const before = await pool.workerPids();
    // No timer and no `then` of its own: the engine awaits fetch's promise and then calls a
    // function that would hold the thread for 5 s, in whatever request runs by then.
    const armed = await pool.execute({
      code: [
        "import js, time",
        "from pyodide.ffi import to_js",
        "wait = time.sleep.__closure__[0].cell_contents",
        "Array = to_js([]).constructor",
        "hold = Array.of.bind.call(wait, None, 5000)",
        `get = Array.of.bind.call(js.fetch, None, 'http://127.0.0.1:${slow.addr.port}/')`,
        "Array.fromAsync(Array.prototype.map.call(to_js([None]), get), hold)",
        "'armed'",
      ].join("\n"),
      tenant: "evil",
    });
    assert.equal(armed.result, "'armed'", JSON.stringify(armed.error));
    await new Promise((resolve) => setTimeout(resolve, 1500));
    const r = await pool.execute({ code: "1 + 1", tenant: "alice", timeout_ms: 2000 });
    assert.equal(r.status, "ok", "the thread was not held");
    assert.equal(r.result, "2");
    assert.deepEqual(await pool.workerPids(), before);
  } finally {
    await pool.close();
    await slow.shutdown();
  }
});

Deno.test("in network mode an event listener runs only within its request, and can be removed", async () => {
  const pool = await Supervisor.start({
    args: ["--pool-size", "1", "--worker-allow-net", "127.0.0.1:9"],
  });
  try {
    const before = await pool.workerPids();
    // Listeners as functions and as objects with `handleEvent` (Deno's own timer fires the
    // event, after the request): left behind, the object's PyProxy would throw in the next
    // request, and end the worker.
    const own = await pool.execute({
      code: [
        "import js",
        "from pyodide.ffi import create_proxy",
        "calls = []",
        "class Listener:",
        "    def handleEvent(self, event):",
        "        calls.append('object')",
        "as_function = create_proxy(lambda event: calls.append('function'))",
        "as_object = create_proxy(Listener())",
        "controller = js.AbortController.new()",
        "for listener in (as_function, as_object):",
        "    controller.signal.addEventListener('abort', listener)",
        "controller.signal.removeEventListener('abort', as_function)",
        "controller.abort()",
        "js.AbortSignal.timeout(300).addEventListener('abort', as_object)",
        "calls",
      ].join("\n"),
      tenant: "evil",
    });
    assert.equal(own.result, "['object']", JSON.stringify(own.error));
    const r = await pool.execute({
      code: "import asyncio\nawait asyncio.sleep(0.6)\n1 + 1",
      tenant: "alice",
    });
    assert.equal(r.status, "ok", JSON.stringify(r.error));
    assert.deepEqual(await pool.workerPids(), before);
  } finally {
    await pool.close();
  }
});
