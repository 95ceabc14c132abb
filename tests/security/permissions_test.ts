/**
 * The worker's Deno permissions: the narrowest set that works, and the opt-in network mode
 * that lets Python reach the named hosts only.
 */

import assert from "node:assert/strict";
import { loadConfig } from "../../lib/config.ts";
import { Supervisor } from "../../lib/pool_client.ts";
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
