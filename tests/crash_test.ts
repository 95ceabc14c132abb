/**
 * Code that ends its interpreter (a Wasm trap, abort, exit, a fatal signal, a stack overflow)
 * is answered, and the worker puts its memory image back and lives on: same process, the next
 * request runs, and nothing of the crashed request is left.
 */

import assert from "node:assert/strict";
import { Supervisor } from "./helpers/supervisor_process.ts";
import type { ExecuteResult } from "../lib/protocol.ts";
import { buildPackageDirectory } from "./helpers/packages.ts";
import { waitUntil } from "./helpers/processes.ts";

/** Each line of the issue that used to end the worker's process, and how it ends now. */
const FATAL: [code: string, status: "crashed" | "exited", detail: RegExp | number][] = [
  ["import ctypes\nctypes.string_at(0xfffffff0, 64)", "crashed", /Wasm trap: memory access out/],
  ["import ctypes\nctypes.memset(0, 0, 1 << 20)", "crashed", /abort\(\)/],
  ["import faulthandler\nfaulthandler._sigsegv()", "crashed", /abort\(\)/],
  ["import os\nos.abort()", "crashed", /abort\(\)/],
  ["import ctypes\nctypes.CDLL(None).abort()", "crashed", /abort\(\)/],
  ["import ctypes\nctypes.CDLL(None).exit(0)", "exited", 0],
  ["import os\nos._exit(3)", "exited", 3],
  ["import os\nos.kill(os.getpid(), 9)", "exited", 128 + 9],
  ["import os, signal\nos.kill(os.getpid(), signal.SIGTERM)", "exited", 128 + 15],
  [
    "import sys\nsys.setrecursionlimit(10**6)\ndef f(n):\n    return f(n + 1)\nf(0)",
    "crashed",
    /stack overflow/,
  ],
  // Not the issue's, but reachable through ctypes: they would end the runtime for good.
  ["import ctypes\nctypes.CDLL(None).emscripten_force_exit(7)", "exited", 7],
  [
    "import ctypes\nlib = ctypes.CDLL(None)\nfor _ in range(5):\n    lib.emscripten_runtime_keepalive_pop()\nlib.exit(0)",
    "exited",
    0,
  ],
  // After an await: the crash comes in an event-loop callback, outside the run's own frames.
  ["import asyncio, os\nawait asyncio.sleep(0.01)\nos._exit(5)", "exited", 5],
  [
    "import asyncio, ctypes\nawait asyncio.sleep(0.01)\nctypes.string_at(0xfffffff0, 64)",
    "crashed",
    /Wasm trap/,
  ],
];

/** Leaves traces the next request must not see: a global, a patched module, a file. */
const TRACES = "import math\nmath.pi = 3\nmarker = 'crashed-request'\n" +
  "open('/tmp/left-by-crash.txt', 'w').write('x')\n";
const CHECK =
  "import math, os\n('marker' in globals(), math.pi, os.path.exists('/tmp/left-by-crash.txt'))";

/** Waits until the pool's one worker, process `pid`, has been replaced by another. */
const replaced = (sup: Supervisor, pid: number) =>
  waitUntil("the replacement", async () => {
    const pids = await sup.workerPids();
    return pids.length === 1 && pids[0] !== pid;
  }, 30_000);

let shared: Promise<Supervisor> | undefined;
const pool = () => shared ??= Supervisor.start({ args: ["--pool-size", "1"] });

for (const [code, status, detail] of FATAL) {
  Deno.test(`recovered in place: ${code.split("\n").at(-1)}`, async () => {
    const sup = await pool();
    const [pid] = await sup.workerPids();
    const r = await sup.execute({ code: TRACES + code, timeout_ms: 20_000 });
    assert.equal(r.status, status, JSON.stringify(r));
    if (typeof detail === "number") assert.equal(r.exit_code, detail);
    else {
      assert.equal(r.error?.type, "InterpreterCrash");
      assert.match(r.error!.message, detail);
    }
    const next = await sup.execute({ code: CHECK });
    assert.equal(next.status, "ok", JSON.stringify(next.error));
    assert.equal(next.result, "(False, 3.141592653589793, False)");
    assert.deepEqual(await sup.workerPids(), [pid], "the same process");
  });
}

Deno.test("Pyodide's own setup, called again through ctypes, does not undo the recovery", async () => {
  const sup = await pool();
  const [pid] = await sup.workerPids();
  await sup.execute({ code: "import ctypes\nctypes.CDLL(None).pyodide_js_init()" });
  const r = await sup.execute({ code: "import os\nos.abort()" });
  assert.equal(r.status, "crashed");
  assert.equal((await sup.execute({ code: "1 + 1" })).result, "2");
  assert.deepEqual(await sup.workerPids(), [pid]);
});

Deno.test("a crash while a timeout cancels an awaiting run is recovered", async () => {
  const sup = await pool();
  const [pid] = await sup.workerPids();
  const code = "import asyncio, os\nclass F(asyncio.Future):\n    def cancel(self, msg=None):\n" +
    "        os.abort()\nawait F()";
  const r = await sup.execute({ code, timeout_ms: 300 });
  assert.equal(r.status, "crashed", JSON.stringify(r));
  assert.equal((await sup.execute({ code: "1 + 1" })).result, "2");
  assert.deepEqual(await sup.workerPids(), [pid]);
});

Deno.test("the pool counts each recovery, by how the interpreter ended, and no restart", async () => {
  const sup = await pool();
  await waitUntil("the last recovery is reported", async () => {
    const stats = await sup.stats();
    return (stats.recoveries.crashed ?? 0) + (stats.recoveries.exited ?? 0) >= FATAL.length;
  }, 5_000);
  const stats = await sup.stats();
  const expected = (kind: string) => FATAL.filter(([, status]) => status === kind).length;
  assert.equal(stats.recoveries.exited, expected("exited"));
  assert.ok(stats.recoveries.crashed >= expected("crashed"));
  assert.deepEqual(stats.restarts, {});
});

Deno.test("processes cannot be spawned, and saying so ends nothing", async () => {
  const sup = await pool();
  const r = await sup.execute({
    code: [
      "import os, posix, ctypes",
      "outcomes = []",
      "for spawn in (os.system, posix.system):",
      "    try:",
      "        spawn('id')",
      "    except OSError as e:",
      "        outcomes.append(str(e))",
      "outcomes.append(ctypes.CDLL(None).system(b'id'))",
      "outcomes",
    ].join("\n"),
  });
  assert.equal(r.status, "ok", JSON.stringify(r.error));
  const refused = "'[Errno 138] emscripten does not support processes.'";
  assert.equal(r.result, `[${refused}, ${refused}, -1]`);
});

Deno.test("sys.exit gives the exit code CPython would", async () => {
  const sup = await pool();
  // As `python3 -c` gives them on Linux: the low 8 bits of a C long, 255 for one too large.
  const codes: [string, number][] = [
    ["sys.exit()", 0],
    ["sys.exit(4)", 4],
    ["sys.exit('bye')", 1],
    ["sys.exit(True)", 1],
    ["sys.exit(-1)", 255],
    ["sys.exit(256)", 0],
    ["sys.exit(2**63 - 1)", 255],
    ["sys.exit(2**70)", 255],
  ];
  for (const [call, code] of codes) {
    const r: ExecuteResult = await sup.execute({ code: `import sys\n${call}` });
    assert.equal(r.status, "exited");
    assert.equal(r.exit_code, code, call);
    assert.equal(r.error, null);
    if (call.includes("bye")) assert.equal(r.stderr, "bye\n");
  }
});

Deno.test("a session that crashes is lost, and says why", async () => {
  const sup = await pool();
  await sup.execute({ code: "x = 1", session_id: "crashing" });
  const crashed = await sup.execute({ code: "import os\nos.abort()", session_id: "crashing" });
  assert.equal(crashed.status, "crashed");
  const lost = await sup.request("execute", { code: "x", session_id: "crashing" });
  assert.equal(lost.error?.code, -32004, JSON.stringify(lost));
  assert.match(lost.error!.message, /crashed \(abort\(\)/);
  // Told once: the id then names a new session.
  const fresh = await sup.execute({ code: "'x' in globals()", session_id: "crashing" });
  assert.equal(fresh.result, "False");
});

Deno.test({
  name: "the crash pool ends cleanly",
  fn: async () => assert.equal((await (await pool()).close()).code, 0),
});

Deno.test("a worker that recovers too often in a minute is replaced", async () => {
  const sup = await Supervisor.start({
    args: ["--pool-size", "1", "--max-recoveries-per-minute", "2"],
  });
  try {
    const [pid] = await sup.workerPids();
    for (let i = 0; i < 3; i++) {
      assert.equal((await sup.execute({ code: "import os\nos.abort()" })).status, "crashed");
    }
    await replaced(sup, pid);
    assert.equal((await sup.stats()).restarts.recoveries, 1);
    assert.equal((await sup.execute({ code: "1 + 1" })).result, "2");
  } finally {
    await sup.close();
  }
});

Deno.test("without the image, a crash is answered and the interpreter replaced", async () => {
  const sup = await Supervisor.start({ args: ["--pool-size", "1", "--isolation", "none"] });
  try {
    const r = await sup.execute({ code: "import ctypes\nctypes.string_at(0xfffffff0, 64)" });
    assert.equal(r.status, "crashed");
    assert.equal((await sup.execute({ code: "1 + 1" })).result, "2");
    // The old interpreter's memory is not given back at once: the process is replaced too.
    await waitUntil("the replacement", async () => {
      const stats = await sup.stats();
      return stats.restarts.tainted === 1;
    }, 30_000);
  } finally {
    await sup.close();
  }
});

Deno.test("a crash set off by the reset after the answer (a destructor) is recovered too", async () => {
  const sup = await Supervisor.start({ args: ["--pool-size", "1", "--isolation", "tenant"] });
  try {
    const [pid] = await sup.workerPids();
    // Held by a builtin only (no cycle): the reset's removal of that name frees it at once.
    const code = [
      "import builtins, os",
      "class Bomb:",
      "    def __del__(self):",
      "        os.abort()",
      "builtins.bomb = Bomb()",
      "'armed'",
    ].join("\n");
    const armed = await sup.execute({ code, tenant: "a" });
    assert.equal(armed.result, "'armed'");
    // The same tenant's next request: the Python-level reset ran in between, and crashed.
    const next = await sup.execute({
      code: "import builtins\nhasattr(builtins, 'bomb')",
      tenant: "a",
    });
    assert.equal(next.result, "False");
    assert.deepEqual(await sup.workerPids(), [pid]);
    await waitUntil("the recovery is counted", async () => {
      return (await sup.stats()).recoveries.crashed === 1;
    }, 5_000);
  } finally {
    await sup.close();
  }
});

Deno.test("a crash inside package loading, in a loader the session patched, is recovered", async () => {
  const sup = await Supervisor.start({
    args: ["--pool-size", "1", "--packages-dir", await buildPackageDirectory()],
  });
  try {
    const [pid] = await sup.workerPids();
    // Pyodide's loader is Python of the session's own interpreter.
    const patch = "import pyodide._package_loader as loader\n" +
      'loader.unpack_buffer.__code__ = (lambda *a, **k: __import__("os").abort()).__code__';
    await sup.execute({ code: patch, session_id: "s", tenant: "t" });
    const r = await sup.execute({
      code: "import helperpkg",
      packages: ["helperpkg"],
      session_id: "s",
      tenant: "t",
    });
    assert.equal(r.status, "crashed", JSON.stringify(r));
    assert.match(r.error!.message, /abort\(\)/);
    const other = await sup.execute({
      code: "import helperpkg\nhelperpkg.X",
      packages: ["helperpkg"],
    });
    assert.equal(other.result, "1", JSON.stringify(other));
    assert.deepEqual(await sup.workerPids(), [pid]);
  } finally {
    await sup.close();
  }
});

Deno.test("without the image, a session whose pickling ends the interpreter costs no other request", async () => {
  const sup = await Supervisor.start({
    args: ["--pool-size", "1", "--isolation", "none", "--worker-request-limit", "3"],
  });
  try {
    const [pid] = await sup.workerPids();
    const bomb =
      "import os\nclass Bomb:\n    def __reduce__(self):\n        os.abort()\nb = Bomb()";
    await sup.execute({ code: bomb, session_id: "bomb", tenant: "t" });
    // The third request recycles the worker: its sessions are pickled for the successor.
    for (let i = 0; i < 2; i++) assert.equal((await sup.execute({ code: "1 + 1" })).result, "2");
    await replaced(sup, pid);
    const lost = await sup.request("execute", { code: "b", session_id: "bomb", tenant: "t" });
    assert.equal(lost.error?.code, -32004, JSON.stringify(lost));
    // Why: the successor never had it, as the interpreter ended while pickling it.
    assert.match(lost.error!.message, /could not move .*crashed: abort\(\)/);
    assert.equal((await sup.execute({ code: "1 + 1" })).result, "2");
  } finally {
    await sup.close();
  }
});
