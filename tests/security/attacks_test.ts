/**
 * The attack suite: Python that tries to get out of its worker, to reach the host, or to
 * leave traces for the next request. Each probe must fail cleanly, and the pool must stay
 * healthy after all of them.
 *
 * Public Pyodide sandbox escapes these probes cover:
 * - `pyodide.code.run_js` evaluates JavaScript (https://github.com/pyodide/pyodide/issues/4120);
 * - `js.postMessage` from the Web Worker (https://github.com/pyodide/pyodide/issues/959);
 * - `pyodide_js._api.loadBinaryFile`, `JsProxy.constructor.constructor` (the Function
 *   constructor) and dynamic `import()` of node modules, found in an audit of a Pyodide MCP
 *   server (https://github.com/microsoft/thinkingbox-data/pull/22);
 * - exposing only a minimal JS global to Pyodide (https://github.com/n8n-io/n8n/pull/14356);
 * - frame and traceback traversal to reach runtime globals
 *   (https://github.com/saint2706/Coding-For-MBA/pull/609).
 */

import assert from "node:assert/strict";
import { Supervisor } from "../helpers/supervisor_process.ts";
import { waitForExit, waitUntil } from "../helpers/processes.ts";

const SECRET = "pool-secret-7d1c";
const PROJECT = new URL("../../", import.meta.url).pathname;
const CANARY = `${PROJECT}.security-canary`;

let shared: Promise<Supervisor> | undefined;
/** The default pool: every request starts from the memory image (`--isolation request`). */
const pool = () =>
  shared ??= Supervisor.start({
    args: ["--pool-size", "2", "--worker-max-memory-mb", "256"],
    env: { POOL_PROBE_SECRET: SECRET },
  });
let sharedNone: Promise<Supervisor> | undefined;
/** A pool with the Python-level reset only (`--isolation none`), for its own guarantees. */
const poolWithoutImage = () =>
  sharedNone ??= Supervisor.start({
    args: ["--pool-size", "2", "--worker-max-memory-mb", "256", "--isolation", "none"],
  });

/** Runs `attack`; the probe's result is "ESCAPED" if it got through, else what stopped it. */
function guarded(attack: string): string {
  const body = attack.split("\n").map((line) => `    ${line}`).join("\n");
  return `try:\n${body}\n    outcome = 'ESCAPED'\nexcept BaseException as e:\n    outcome = 'blocked: ' + type(e).__name__\noutcome`;
}

/** Probes that must be stopped by an exception. */
const BLOCKED: [string, string][] = [
  ["read /etc/passwd", "open('/etc/passwd').read()"],
  ["read the project's source", `open(${JSON.stringify(`${PROJECT}worker_server.ts`)}).read()`],
  ["write a file on the host", `open(${JSON.stringify(CANARY)}, 'w').write('x')`],
  ["from js import Deno", "from js import Deno"],
  ["js.Deno.readTextFileSync", "import js\njs.Deno.readTextFileSync('/etc/passwd')"],
  ["js.process (Node)", "import js\njs.process.env"],
  ["from js import eval", "from js import eval"],
  ["from js import fetch", "from js import fetch"],
  ["from js import Worker", "from js import Worker"],
  [
    "js.postMessage to the main thread (pyodide#959)",
    "from js import postMessage\npostMessage('x')",
  ],
  ["import pyodide_js", "import pyodide_js"],
  [
    "pyodide_js._api.loadBinaryFile",
    "import pyodide_js\npyodide_js._api.loadBinaryFile('/etc/passwd')",
  ],
  ["pyodide_js.mountNodeFS", "import pyodide_js\npyodide_js.mountNodeFS('/host', '/')"],
  [
    "a js or pyodide_js submodule left in sys.modules (pyodide_js._api, by pyodide.webloop)",
    "import sys\nnext(m for k, m in sys.modules.items() if k.partition('.')[0] in ('js', 'pyodide_js'))",
  ],
  ["__import__('pyodide_js')", "__import__('pyodide_js')"],
  [
    "importlib.import_module('pyodide_js')",
    "import importlib\nimportlib.import_module('pyodide_js')",
  ],
  [
    "pyodide.code.run_js (pyodide#4120)",
    "from pyodide.code import run_js\nrun_js('Deno.env.toObject()')",
  ],
  [
    "to_js(...).constructor.constructor('return globalThis')",
    "from pyodide.ffi import to_js\nto_js([1]).constructor.constructor('return globalThis')()",
  ],
  [
    "create_proxy(...).constructor (Function constructor)",
    "from pyodide.ffi import create_proxy\ncreate_proxy(lambda: 1).constructor('return globalThis')()",
  ],
  ["js module's constructor", "import js\njs.constructor"],
  [
    "loadedPackages.constructor.constructor",
    "import pyodide._package_loader as p\np.loadedPackages.constructor.constructor('return this')()",
  ],
  [
    "time.sleep's JavaScript helper",
    "import time\ntime.sleep.__closure__[0].cell_contents.constructor('return globalThis')()",
  ],
  [
    "dynamic import() through the Function constructor",
    "from pyodide.ffi import to_js\nto_js({}).constructor.constructor('return import(\"node:fs\")')()",
  ],
  [
    "urllib to loopback",
    "import urllib.request\nurllib.request.urlopen('http://127.0.0.1:9/', timeout=1)",
  ],
  ["socket to loopback", "import socket\nsocket.create_connection(('127.0.0.1', 9), timeout=1)"],
  [
    "pyodide.http.pyfetch",
    "from pyodide.http import pyfetch\nawait pyfetch('http://127.0.0.1:9/')",
  ],
  ["subprocess.run", "import subprocess\nsubprocess.run(['ls'])"],
  ["os.fork", "import os\nos.fork()"],
  ["ctypes loading libc", "import ctypes\nctypes.CDLL('libc.so.6')"],
  [
    "a fork bomb of threads",
    "import threading\nfor _ in range(1000):\n    threading.Thread(target=lambda: None).start()",
  ],
];

for (const [name, attack] of BLOCKED) {
  Deno.test(`attack fails: ${name}`, async () => {
    const r = await (await pool()).execute({ code: guarded(attack) });
    assert.equal(r.status, "ok", JSON.stringify(r.error));
    assert.match(r.result!, /^'blocked: \w+'$/, `${name}: ${r.result}`);
  });
}

Deno.test("attack fails: the host environment is invisible", async () => {
  const r = await (await pool()).execute({
    code: `import os\n(${
      JSON.stringify(SECRET)
    } in repr(dict(os.environ)), os.environ.get('PATH') == ${
      JSON.stringify(Deno.env.get("PATH") ?? "")
    })`,
  });
  assert.equal(r.result, "(False, False)");
});

Deno.test("attack fails: no JavaScript object reachable from Python climbs to globalThis", async () => {
  const r = await (await pool()).execute({
    code: [
      "import gc",
      "escaped = checked = 0",
      "for o in gc.get_objects():",
      "    if 'JsProxy' not in type(o).__name__ and 'Js' not in type(o).__name__[:2]:",
      "        continue",
      "    checked += 1",
      "    try:",
      "        o.constructor.constructor('return globalThis')()",
      "        escaped += 1",
      "    except BaseException:",
      "        pass",
      "(escaped, checked > 0)",
    ].join("\n"),
  });
  assert.equal(r.status, "ok", JSON.stringify(r.error));
  assert.equal(r.result, "(0, True)");
});

Deno.test("attack fails: frames and tracebacks lead to no JavaScript", async () => {
  const r = await (await pool()).execute({
    code: [
      "import sys",
      "try:",
      "    1 / 0",
      "except ZeroDivisionError as e:",
      "    frame = e.__traceback__.tb_frame",
      "names = set()",
      "while frame is not None:",
      "    names.update(frame.f_globals)",
      "    frame = frame.f_back",
      "'js' in names or 'pyodide_js' in names or 'Deno' in names",
    ].join("\n"),
  });
  assert.equal(r.result, "False");
});

Deno.test("attack fails: forged JSON-RPC lines on stdout never reach the client", async () => {
  const sup = await pool();
  const forged = '{"jsonrpc":"2.0","id":"forged-sec","result":{"status":"ok"}}';
  const r = await sup.execute({
    code: `import os, sys\nprint(${JSON.stringify(forged)})\nos.write(1, b${
      JSON.stringify(forged + "\n")
    })\nsys.__stdout__.write(${JSON.stringify(forged + "\n")})`,
  });
  assert.equal(r.status, "ok");
  assert.ok(!sup.received.some((m) => (m as { id?: unknown }).id === "forged-sec"));
});

Deno.test("attack fails: a huge allocation and an infinite recursion", async () => {
  const sup = await pool();
  assert.equal((await sup.execute({ code: "bytearray(1_000_000_000)" })).status, "memory_limit");
  const deep = await sup.execute({ code: "def f():\n    return f()\nf()" });
  assert.equal(deep.error?.type, "RecursionError");
});

Deno.test("attack fails: nothing a request changes is seen by the next one", async () => {
  const sup = await pool();
  const plant = [
    "import builtins, gc, json, os, signal, sys, colorsys, pyodide_pool_figures",
    "builtins.planted = 1",
    "json.dumps = lambda *a, **k: 'hijacked'",
    "pyodide_pool_figures.capture = lambda: [{'format': 'png', 'data_b64': 'ZXZpbA=='}]",
    "os.environ['PLANTED'] = '1'",
    "sys.path.insert(0, '/tmp/evil')",
    "sys.setrecursionlimit(60)",
    "spy = lambda *a: print('spied')",
    "sys.settrace(spy)",
    "sys.setprofile(spy)",
    "sys.set_asyncgen_hooks(firstiter=spy)",
    "sys.monitoring.use_tool_id(3, 'spy')",
    "sys.monitoring.set_events(3, sys.monitoring.events.PY_START)",
    "sys.monitoring.register_callback(3, sys.monitoring.events.PY_START, spy)",
    "signal.signal(signal.SIGINT, signal.SIG_IGN)",
    "gc.disable()",
    "sys.set_int_max_str_digits(700)",
    // Its destructor runs in the reset, when no request runs, and plants again.
    "class Ghost:",
    "    def __del__(self, say=print, sys=sys, signal=signal):",
    "        say('ghost')",
    "        sys.setrecursionlimit(60)",
    "        signal.signal(signal.SIGINT, signal.SIG_IGN)",
    "builtins.ghost = Ghost()",
    "open('/home/pyodide/planted.py', 'w').write('X = 1')",
    "os.makedirs('/tmp/evil', exist_ok=True)",
    "open('/lib/python3.14/site-packages/planted.py', 'w').write('X = 1')",
    "os.chdir('/')",
    "leaked_global = 1",
  ].join("\n");
  // Twice per worker, so that every worker has been planted on.
  await Promise.all([1, 2, 3, 4].map(() => sup.execute({ code: plant })));
  const check = [
    "import builtins, gc, json, os, signal, sys",
    "found = []",
    "found += ['builtins'] if hasattr(builtins, 'planted') else []",
    "found += ['json'] if json.dumps({}) != '{}' else []",
    "found += ['environ'] if 'PLANTED' in os.environ else []",
    "found += ['sys.path'] if '/tmp/evil' in sys.path else []",
    "found += ['recursion'] if sys.getrecursionlimit() == 60 else []",
    "found += ['trace'] if sys.gettrace() or sys.getprofile() else []",
    "found += ['asyncgen hooks'] if sys.get_asyncgen_hooks().firstiter else []",
    "found += ['monitoring'] if sys.monitoring.get_tool(3) else []",
    "found += ['sigint'] if signal.getsignal(signal.SIGINT) is not signal.default_int_handler else []",
    "found += ['gc'] if not gc.isenabled() else []",
    "found += ['int digits'] if sys.get_int_max_str_digits() == 700 else []",
    "found += ['home file'] if os.path.exists('/home/pyodide/planted.py') else []",
    "found += ['tmp dir'] if os.path.exists('/tmp/evil') else []",
    "found += ['site-packages'] if os.path.exists('/lib/python3.14/site-packages/planted.py') else []",
    "found += ['cwd'] if os.getcwd() == '/' else []",
    "found += ['global'] if 'leaked_global' in globals() else []",
    "found += ['module'] if 'colorsys' in sys.modules else []",
    "found",
  ].join("\n");
  const results = await Promise.all([1, 2, 3, 4].map(() => sup.execute({ code: check })));
  assert.equal(new Set(results.map((r) => r.worker_id)).size, 2);
  for (const r of results) {
    assert.equal(r.result, "[]", JSON.stringify(r.error));
    assert.deepEqual(r.figures, [], "the runtime patch was undone");
    assert.equal(r.stdout + r.stderr, "", "no output of an earlier request");
  }
});

Deno.test("attack fails: a report forged through json.dumps is an error result; the worker serves on", async () => {
  const sup = await pool();
  const forgeries = [
    // Not a string: once taken for the run's task, and the worker exited (code 70).
    "json.dumps = lambda *a, **k: 1",
    "json.dumps = lambda *a, **k: None",
    // A status the runtime never writes, and a session error the worker would raise.
    `json.dumps = lambda *a, **k: '{"status": "bogus"}'`,
    `json.dumps = lambda *a, **k: '{"status": "session_lost", "error": {"message": "x"}}'`,
  ];
  for (const forgery of forgeries) {
    for (
      const code of [
        `import json\n${forgery}`,
        `import json, asyncio\n${forgery}\nawait asyncio.sleep(0)`,
      ]
    ) {
      const r = await sup.execute({ code });
      assert.equal(r.status, "error", `${code}: ${JSON.stringify(r)}`);
      assert.equal(r.error?.type, "RuntimeError", code);
      assert.match(r.error!.message, /could not be reported/, code);
    }
  }
  assert.equal((await sup.execute({ code: "import json\njson.dumps([1])" })).result, "'[1]'");
});

Deno.test("attack fails: a file changed behind its times is restored", async () => {
  const sup = await pool();
  const rc = "/home/pyodide/.config/matplotlib/matplotlibrc";
  // Put the modification time back after writing, or truncate (which changes no time at all):
  // the reset must not rely on what Python can set.
  const plants = [
    `import os\nst = os.stat('${rc}')\nopen('${rc}', 'w').write('backend: evil\\n')\n` +
    `os.utime('${rc}', ns=(st.st_atime_ns, st.st_mtime_ns))`,
    `import os\nos.truncate('${rc}', 0)`,
  ];
  for (const plant of plants) {
    await Promise.all([1, 2, 3, 4].map(() => sup.execute({ code: plant })));
    const results = await Promise.all(
      [1, 2, 3, 4].map(() => sup.execute({ code: `open('${rc}').read()` })),
    );
    for (const r of results) assert.equal(r.result, "'backend: Agg\\n'", plant);
  }
});

/**
 * Changes the Python-level reset cannot undo: a watched folder replaced by a link, a removed
 * folder, a write into the stdlib zip; each with what the next request must find.
 */
const UNDOABLE_BY_PYTHON: [string, string, string, string][] = [
  [
    "a watched folder replaced by a link",
    "import os, shutil\nos.chdir('/')\nshutil.rmtree('/tmp/pyodide-pool/run')\n" +
    "os.symlink('/home', '/tmp/pyodide-pool/run')",
    "import os\nos.path.islink('/tmp/pyodide-pool/run')",
    "False",
  ],
  [
    "a removed watched folder",
    "import shutil\nshutil.rmtree('/home/pyodide/.config')",
    "import os\nos.path.exists('/home/pyodide/.config/matplotlib/matplotlibrc')",
    "True",
  ],
  [
    "a changed stdlib zip",
    "open('/lib/python314.zip', 'ab').write(b'garbage')",
    "import os\nos.path.getsize('/lib/python314.zip') == 2545637",
    "True",
  ],
];

for (const [name, attack, check, expected] of UNDOABLE_BY_PYTHON) {
  Deno.test(`attack fails: ${name} is put back by the image; the worker stays`, async () => {
    const sup = await pool();
    const restarts = async () => (await sup.stats()).restarts;
    const before = await restarts();
    // Both workers, twice each.
    const planted = await Promise.all([1, 2, 3, 4].map(() => sup.execute({ code: attack })));
    for (const r of planted) assert.equal(r.status, "ok", JSON.stringify(r.error));
    const results = await Promise.all([1, 2, 3, 4].map(() => sup.execute({ code: check })));
    assert.equal(new Set(results.map((r) => r.worker_id)).size, 2);
    for (const r of results) assert.equal(r.result, expected, JSON.stringify(r.error));
    assert.deepEqual(await restarts(), before);
  });
}

/** Runs `code` on the pool without the image and checks that its worker was tainted, and then replaced. */
async function assertTaintsItsWorker(code: string): Promise<void> {
  const sup = await poolWithoutImage();
  const tainted = async () => (await sup.stats()).restarts.tainted ?? 0;
  const before = await tainted();
  const r = await sup.execute({ code });
  assert.equal(r.status, "ok");
  await waitUntil("the tainted worker's replacement", async () => {
    const health = await sup.health();
    return health.ready_workers === 2 && !health.workers.some((w) => w.id === r.worker_id);
  }, 30_000);
  assert.equal(await tainted(), before + 1);
}

for (const [name, attack, check, expected] of UNDOABLE_BY_PYTHON) {
  Deno.test(`without the image, ${name} taints the worker, which is replaced`, async () => {
    await assertTaintsItsWorker(attack);
    const after = await (await poolWithoutImage()).execute({ code: check });
    assert.equal(after.result, expected);
  });
}

Deno.test("without the image, a request that breaks the reset costs no other request", async () => {
  const sup = await poolWithoutImage();
  const breakers = [
    // Patched in place: the reset holds its own references, so these break nothing.
    "import builtins, operator\noperator.is_ = None\nbuiltins.map = builtins.len = None",
    // The reset itself: it fails, and the worker replaces its interpreter.
    "import pyodide_pool_isolation as isolation\nisolation.Baseline.restore = None",
  ];
  // Each worker takes a breaker, then the request queued behind it.
  const broken = breakers.map((code) => sup.execute({ code }));
  const behind = [1, 2].map((i) => sup.execute({ code: `${i} * 21` }));
  for (const r of await Promise.all(broken)) assert.equal(r.status, "ok", JSON.stringify(r.error));
  assert.deepEqual((await Promise.all(behind)).map((r) => r.result), ["21", "42"]);
  await waitUntil("two ready workers", async () => {
    const health = await sup.health();
    return health.ready_workers === 2 && health.workers.length === 2;
  }, 30_000);
});

Deno.test("attack fails: event-loop callbacks stay inside their request", async () => {
  const sup = await pool();
  const plant = "import asyncio\nloop = asyncio.get_event_loop()\n" +
    "def spy():\n    print('spied')\n    loop.call_later(0.01, spy)\nloop.call_later(0.01, spy)";
  // One per worker, then a request on each that waits long enough for the spy to fire.
  await Promise.all([1, 2].map(() => sup.execute({ code: plant })));
  const waiting = "import asyncio\nawait asyncio.sleep(0.1)\n'waited'";
  for (const r of await Promise.all([1, 2].map(() => sup.execute({ code: waiting })))) {
    assert.deepEqual([r.result, r.stdout], ["'waited'", ""]);
  }
  // asyncio lets KeyboardInterrupt and SystemExit out of a callback: they stop the request.
  const spin = await sup.execute({
    code: "import asyncio\nasyncio.get_event_loop().call_soon(lambda: exec('while True: pass'))\n" +
      "await asyncio.sleep(100)",
    timeout_ms: 300,
  });
  assert.equal(spin.status, "timeout");
  assert.match(spin.error!.message, /stopped by interrupt$/);
  const exit = await sup.execute({
    code: "import asyncio, sys\nasyncio.get_event_loop().call_soon(sys.exit, 3)\n" +
      "await asyncio.sleep(5)\n'went on'",
  });
  assert.deepEqual([exit.status, exit.error?.type], ["error", "CancelledError"]);
  assert.equal((await sup.execute({ code: "6 * 7" })).result, "42");
});

Deno.test("attack fails: filling the file system is cut by the timeout and cleaned up", async () => {
  const sup = await pool();
  const r = await sup.execute({
    code:
      "chunk = b'x' * (1 << 20)\nwith open('/tmp/fill', 'wb') as f:\n    for _ in range(200):\n        f.write(chunk)\n    while True:\n        pass",
    timeout_ms: 1500,
  });
  assert.equal(r.status, "timeout");
  const after = await sup.execute({ code: "import os\nos.path.exists('/tmp/fill')" });
  assert.equal(after.result, "False");
});

Deno.test({
  name: "the pool is healthy after every attack; no file was written on the host",
  fn: async () => {
    for (const sup of [await pool(), await poolWithoutImage()]) {
      const health = await sup.health();
      assert.equal(health.status, "ok");
      assert.equal((await sup.execute({ code: "6 * 7" })).result, "42");
      const pids = await sup.workerPids();
      assert.equal((await sup.close()).code, 0);
      await waitForExit(pids);
    }
    assert.throws(() => Deno.statSync(CANARY));
  },
});
