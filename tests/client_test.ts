/**
 * clients/typescript/client.ts against real supervisors: typed calls, error classes, concurrency, streamed
 * output, cancellation, a supervisor that dies or never starts, and attaching to streams.
 */

import assert from "node:assert/strict";
import {
  CancelledError,
  ConnectionClosedError,
  ErrorCode,
  InvalidParamsError,
  MethodNotFoundError,
  PoolClient,
  RpcError,
  supervisorCommand,
} from "../clients/typescript/client.ts";
import { waitForExit } from "./helpers/processes.ts";

const quiet = { PYODIDE_LOG_LEVEL: "warning" };
const fromRoot = (path: string) => new URL(`../${path}`, import.meta.url).pathname;
let shared: Promise<PoolClient> | undefined;
const pool = () =>
  shared ??= PoolClient.spawn({ args: ["--pool-size", "2"], env: quiet, waitForWorkers: 2 });

Deno.test("client: execute returns the typed result", async () => {
  const p = await pool();
  const r = await p.execute("print('hi')\nsum(i * i for i in range(10))");
  assert.equal(r.status, "ok");
  assert.equal(r.stdout, "hi\n");
  assert.equal(r.result, "285");
  const failed = await p.execute("1 / 0");
  assert.equal(failed.status, "error");
  assert.equal(failed.error?.type, "ZeroDivisionError");
  const slow = await p.execute("while True: pass", { timeout_ms: 200 });
  assert.equal(slow.status, "timeout");
});

Deno.test("client: error responses become RpcError subclasses with code and data", async () => {
  const p = await pool();
  const invalid = await p.execute("1", { session_id: "has space" }).catch((e) => e);
  assert.ok(invalid instanceof InvalidParamsError);
  assert.ok(invalid instanceof RpcError);
  assert.equal(invalid.code, ErrorCode.InvalidParams);
  assert.equal(invalid.data.field, "session_id");
  assert.match(invalid.message, /session_id must be 1-128/);
  const disabled = await p.shutdown().catch((e) => e);
  assert.ok(disabled instanceof MethodNotFoundError);
  assert.match(String(disabled.data.hint), /--allow-shutdown/);
  await assert.rejects(p.call("no_such_method"), MethodNotFoundError);
});

Deno.test("client: concurrent calls each get their own answer", async () => {
  const p = await pool();
  const results = await Promise.all(
    Array.from({ length: 12 }, (_, i) => p.execute(`import time\ntime.sleep(0.02)\n${i} ** 2`)),
  );
  assert.deepEqual(results.map((r) => r.result), Array.from({ length: 12 }, (_, i) => `${i ** 2}`));
  assert.equal(new Set(results.map((r) => r.worker_id)).size, 2);
});

Deno.test("client: health, stats and packages", async () => {
  const p = await pool();
  const health = await p.health();
  assert.equal(health.status, "ok");
  assert.equal(health.ready_workers, 2);
  assert.equal(health.workers.length, 2);
  assert.equal(typeof (await p.stats()).requests_total, "number");
  const packages = await p.packages();
  assert.equal(packages.source, "none");
  assert.ok(packages.available.length > 0);
});

Deno.test("client: streamed output and cancellation", async () => {
  const p = await pool();
  const chunks: string[] = [];
  const streamed = await p.execute("for i in range(3):\n    print(i, flush=True)", {
    onOutput: (stream, text) => chunks.push(`${stream}:${text}`),
  });
  assert.equal(streamed.stdout, "0\n1\n2\n");
  assert.equal(chunks.join("").replaceAll("stdout:", ""), "0\n1\n2\n");
  const abort = new AbortController();
  const running = p.execute("import time\ntime.sleep(30)", { signal: abort.signal });
  setTimeout(() => abort.abort(), 200);
  await assert.rejects(running, CancelledError);
  assert.equal((await p.execute("'after'")).result, "'after'");
});

Deno.test("client: close lets running requests finish, then the supervisor exits 0", async () => {
  const p = await pool();
  const pids = (await p.health()).workers.map((w) => w.pid);
  const last = p.execute("import time\ntime.sleep(0.2)\n'last'");
  assert.equal(await p.close(), 0);
  assert.equal((await last).result, "'last'");
  await assert.rejects(p.execute("1"), ConnectionClosedError);
  await waitForExit(pids);
});

Deno.test("client: pending calls fail when the supervisor dies", async () => {
  await using p = await PoolClient.spawn({
    args: ["--pool-size", "1"],
    env: quiet,
    waitForWorkers: 1,
  });
  const pids = (await p.health()).workers.map((w) => w.pid);
  const pending = p.execute("import time\ntime.sleep(30)");
  await new Promise((r) => setTimeout(r, 200));
  p.kill("SIGKILL");
  await assert.rejects(pending, (error: Error) => {
    assert.ok(error instanceof ConnectionClosedError);
    assert.match(error.message, /the supervisor exited \(code null, signal SIGKILL\)/);
    return true;
  });
  await assert.rejects(p.health(), ConnectionClosedError);
  await waitForExit(pids);
});

Deno.test("client: a supervisor that cannot start fails the first call clearly", async () => {
  const p = await PoolClient.spawn({ command: ["/nonexistent/deno"] });
  await assert.rejects(p.health(), /cannot start the supervisor: .*ENOENT/);
  assert.equal(await p.close(), null);
});

Deno.test("client: attach speaks over the streams of a supervisor started elsewhere", async () => {
  const [command, args] = supervisorCommand(["--use-pool=false"]);
  const child = new Deno.Command(command, {
    args,
    env: quiet,
    stdin: "piped",
    stdout: "piped",
  }).spawn();
  const p = PoolClient.attach({ input: child.stdout, output: child.stdin });
  assert.equal((await p.health()).use_pool, false);
  assert.equal(await p.close(), null);
  assert.equal((await child.status).code, 0);
});

const NODE_SCRIPT = `
import { PoolClient, InvalidParamsError } from "./client.mjs";
const [executable, args] = JSON.parse(process.argv[2]);
const pool = await PoolClient.spawn({ command: [executable, ...args], args: ["--pool-size", "1"] });
const results = await Promise.all([1, 2, 3].map((i) => pool.execute(i + " * 10")));
console.log("results", results.map((r) => r.result).join(","));
const error = await pool.execute("1", { session_id: "bad id" }).catch((e) => e);
console.log("error", error instanceof InvalidParamsError, error.code);
console.log("exit", await pool.close());
`;

function nodeOnPath(): string | undefined {
  try {
    return new Deno.Command("node", { args: ["--version"] }).outputSync().success
      ? "node"
      : undefined;
  } catch {
    return undefined;
  }
}
const node = nodeOnPath();

Deno.test({
  name: "client: the bundled module runs under Node",
  ignore: node === undefined,
  fn: async () => {
    const directory = await Deno.makeTempDir({ prefix: "pyodide-pool-node-" });
    const bundle = await new Deno.Command(Deno.execPath(), {
      args: [
        "bundle",
        "--quiet",
        "-o",
        `${directory}/client.mjs`,
        fromRoot("clients/typescript/client.ts"),
      ],
    }).output();
    assert.equal(bundle.code, 0, new TextDecoder().decode(bundle.stderr));
    await Deno.writeTextFile(`${directory}/proof.mjs`, NODE_SCRIPT);
    const run = await new Deno.Command(node!, {
      args: [`${directory}/proof.mjs`, JSON.stringify(supervisorCommand())],
      env: quiet,
    }).output();
    const stdout = new TextDecoder().decode(run.stdout);
    assert.equal(run.code, 0, new TextDecoder().decode(run.stderr));
    assert.equal(stdout, "results 10,20,30\nerror true -32602\nexit 0\n");
    await Deno.remove(directory, { recursive: true });
  },
});
