/**
 * Attacks across tenants: one request reads or changes what another tenant's request left in
 * the interpreter (live session data, freed memory, patched modules and classes, an audit
 * hook), evaluates JavaScript through ctypes, or looks for host paths. Each runs on one worker,
 * so that attacker and victim share an interpreter, with `--isolation request` (the default)
 * and `tenant`, where each must fail; and the data attacks with `none`, where they succeed:
 * that mode's documented risk, and the proof that the probes can see a leak.
 */

import assert from "node:assert/strict";
import { Supervisor } from "../helpers/supervisor_process.ts";
import type { ExecuteResult, Isolation } from "../../lib/protocol.ts";

const PROJECT = new URL("../../", import.meta.url).pathname;

const pools = new Map<string, Promise<Supervisor>>();
/** One worker per mode, shared by this file's tests. */
const pool = (isolation: Isolation) => {
  if (!pools.has(isolation)) {
    pools.set(
      isolation,
      Supervisor.start({ args: ["--pool-size", "1", "--isolation", isolation] }),
    );
  }
  return pools.get(isolation)!;
};

async function run(sup: Supervisor, params: Record<string, unknown>): Promise<ExecuteResult> {
  const r = await sup.execute(params);
  assert.equal(r.status, "ok", JSON.stringify(r.error));
  return r;
}

/**
 * Reads the whole Wasm heap. From address 1: `string_at(0, n)` is `PyBytes_FromStringAndSize`
 * of a null pointer, which makes an uninitialized buffer instead of a copy.
 */
const READ_HEAP = "heap = ctypes.string_at(1, ctypes.CDLL(None).emscripten_get_heap_size() - 1)";

/**
 * Counts the copies of `marker` in the Wasm heap. The probe builds the marker at run time, so
 * its code holds no copy; its own copies (the joined string and its bytes) are the same in
 * every run, and the probe is compared with itself on a fresh interpreter.
 */
const heapScan = (marker: string) => {
  const half = marker.length >> 1;
  return [
    "import ctypes",
    `halves = [${JSON.stringify(marker.slice(0, half))}, ${JSON.stringify(marker.slice(half))}]`,
    "needle = ''.join(halves).encode()",
    READ_HEAP,
    "heap.count(needle)",
  ].join("\n");
};

/**
 * A tenant that has not run before: its request starts from the put-back image, as the victim's
 * does after another tenant. (Two requests of one tenant share their state in `tenant` mode, and
 * the allocator's state changes how many of the probe's own copies survive.)
 */
const freshTenant = () => `control-${crypto.randomUUID()}`;

/** Plants copies of `marker`, made at run time, in live objects and in freed memory. */
const plantCopies = (marker: string) =>
  [
    `kept = [${JSON.stringify(marker)} + str(i) for i in range(6)]`,
    `freed = [${JSON.stringify(marker)} * 2 for _ in range(6)]`,
    "del freed",
  ].join("\n");

const MODES = ["request", "tenant"] as const;

for (const mode of MODES) {
  Deno.test(`--isolation ${mode}: no request finds another session's live data (gc scan)`, async () => {
    const sup = await pool(mode);
    await run(sup, {
      code: "secret = 'ALICE-' + 'SECRET-1234'",
      session_id: `alice-${mode}`,
      tenant: "alice",
    });
    const scan =
      "import gc\n[o.get('secret') for o in gc.get_objects() if isinstance(o, dict) and 'secret' in o]";
    for (const params of [{}, { tenant: "bob" }, { session_id: `bob-${mode}`, tenant: "bob" }]) {
      const r = await run(sup, { code: scan, ...params });
      assert.ok(!r.result!.includes("ALICE-SECRET-1234"), `${JSON.stringify(params)}: ${r.result}`);
    }
    // The session itself still has it.
    const own = await run(sup, { code: "secret", session_id: `alice-${mode}`, tenant: "alice" });
    assert.equal(own.result, "'ALICE-SECRET-1234'");
  });

  Deno.test(`--isolation ${mode}: the heap holds nothing of an earlier request (ctypes scan)`, async () => {
    const sup = await pool(mode);
    const marker = `EARLIER-${mode.toUpperCase()}-MARK`;
    const control = (await run(sup, { code: heapScan(marker), tenant: freshTenant() })).result;
    assert.ok(Number(control) > 0, "the probe sees its own copies");
    await run(sup, { code: plantCopies(marker), tenant: "alice" });
    const after = await run(sup, { code: heapScan(marker), tenant: "bob" });
    assert.equal(after.result, control, "the victim's copies are gone");
  });

  Deno.test(`--isolation ${mode}: the heap holds nothing of a parked session (ctypes scan)`, async () => {
    const sup = await pool(mode);
    const marker = `PARKED-${mode.toUpperCase()}-MARK`;
    const control = (await run(sup, { code: heapScan(marker), tenant: freshTenant() })).result;
    const session = { session_id: `parked-${mode}`, tenant: "alice" };
    await run(sup, { code: plantCopies(marker), ...session });
    const after = await run(sup, { code: heapScan(marker), tenant: "bob" });
    assert.equal(after.result, control);
    // Resumed, the session has its copies again.
    const own = await run(sup, { code: "len(kept)", ...session });
    assert.equal(own.result, "6");
  });

  Deno.test(`--isolation ${mode}: patched stdlib modules and classes do not reach another tenant`, async () => {
    const sup = await pool(mode);
    // Its own answer breaks (the runtime reports through json): only the next tenant matters.
    await sup.execute({
      code: [
        "import math, random, fractions, collections, json",
        "math.pi = 3",
        "random.random = lambda: 0.4242",
        "fractions.Fraction.__repr__ = lambda self: 'HACKED'",
        "collections.Counter.planted = 1",
        "json.JSONEncoder.item_separator = '!'",
      ].join("\n"),
      tenant: "alice-tamper",
    });
    const check = await run(sup, {
      code: [
        "import math, random, fractions, collections, json",
        "(math.pi, random.random() != 0.4242, repr(fractions.Fraction(1, 2)),",
        " hasattr(collections.Counter, 'planted'), json.dumps([1, 2]))",
      ].join("\n"),
      tenant: "bob",
    });
    assert.equal(check.result, "(3.141592653589793, True, 'Fraction(1, 2)', False, '[1, 2]')");
  });

  Deno.test(`--isolation ${mode}: an audit hook does not outlive its tenant`, async () => {
    const sup = await pool(mode);
    await run(sup, {
      code: "import sys\n" +
        "def spy(event, args):\n" +
        "    if event == 'open':\n" +
        "        raise PermissionError('audited by another tenant')\n" +
        "sys.addaudithook(spy)",
      tenant: "alice-audit",
    });
    const r = await run(sup, { code: "open('/tmp/x', 'w').write('ok')", tenant: "bob" });
    assert.equal(r.result, "2");
  });
}

Deno.test("--isolation tenant: requests of one tenant see each other's changes; others do not", async () => {
  const sup = await pool("tenant");
  await run(sup, { code: "import math\nmath.pi = 3\nimport builtins", tenant: "carol" });
  const same = await run(sup, { code: "import math\nmath.pi", tenant: "carol" });
  assert.equal(same.result, "3");
  for (const other of [{ tenant: "dave" }, {}]) {
    const r = await run(sup, { code: "import math\nmath.pi", ...other });
    assert.equal(r.result, "3.141592653589793", JSON.stringify(other));
  }
  // Put back when the tenant changed: carol's change is gone for carol too.
  assert.equal(
    (await run(sup, { code: "import math\nmath.pi", tenant: "carol" })).result,
    "3.141592653589793",
  );
});

Deno.test("--isolation none: the same probes find the other tenant's data (the mode's risk)", async () => {
  const sup = await pool("none");
  await run(sup, { code: "secret = 'ALICE-' + 'SECRET-1234'", session_id: "alice-none" });
  const gc = await run(sup, {
    code:
      "import gc\n[o.get('secret') for o in gc.get_objects() if isinstance(o, dict) and 'secret' in o]",
  });
  assert.ok(gc.result!.includes("ALICE-SECRET-1234"));
  const marker = "EARLIER-NONE-MARK";
  const control = Number((await run(sup, { code: heapScan(marker) })).result);
  assert.ok(control > 0, "the probe sees its own copies");
  await run(sup, { code: plantCopies(marker) });
  const after = Number((await run(sup, { code: heapScan(marker) })).result);
  assert.ok(after > control, `${after} copies after, ${control} before`);
  // A class of a module loaded before any request: the Python-level reset keeps its patch.
  await run(sup, { code: "import collections\ncollections.Counter.planted = 1" });
  const patched = await run(sup, { code: "import collections\ncollections.Counter.planted" });
  assert.equal(patched.result, "1");
});

for (const mode of ["request", "none"] as const) {
  Deno.test(`--isolation ${mode}: no JavaScript is evaluated through ctypes, and the worker lives`, async () => {
    const sup = await pool(mode);
    const [before] = await sup.workerPids();
    const r = await run(sup, {
      code: [
        "import ctypes",
        "libc = ctypes.CDLL(None)",
        "libc.emscripten_run_script_string.restype = ctypes.c_char_p",
        "(libc.emscripten_run_script_string(b'typeof Deno'),",
        " libc.emscripten_run_script_int(b'41 + 1'),",
        " libc.emscripten_run_script(b'globalThis.planted = 1'),",
        " libc.emscripten_run_script_int(b'globalThis.planted | 0'))",
      ].join("\n"),
    });
    assert.equal(r.result, "(None, 0, 0, 0)");
    assert.deepEqual(await sup.workerPids(), [before]);
  });
}

Deno.test("a JavaScript timer a request leaves cannot read or write a later request's memory", async () => {
  const sup = await pool("request");
  // No ctypes: Pyodide's FFI gives a view of the whole Wasm memory, and its event loop's
  // scheduler takes plain JavaScript functions. The timers keep writing 5 into the small int 2,
  // and try to stash the victims' memory on a shared JavaScript object.
  const attack = await run(sup, {
    code: [
      "from pyodide.ffi import create_proxy, to_js",
      "from pyodide.webloop import scheduleCallback",
      "data = create_proxy(bytearray(16)).getBuffer('u8').data",
      "U8 = data.constructor",
      "heap = U8.new(data.buffer)",
      "poke = heap.set.bind(heap, U8.new(to_js([5, 0, 0, 0])), id(2) + 12)",
      "for i in range(1, 40):",
      "    scheduleCallback.call(None, poke, 10 * i)",
      "try:",
      "    scheduleCallback.stash = heap",
      "    stashed = 'stashed'",
      "except Exception as e:",
      "    stashed = type(e).__name__",
      "stashed",
    ].join("\n"),
    tenant: "evil",
  });
  assert.equal(attack.result, "'JsException'", "shared JavaScript objects are frozen");
  for (let i = 0; i < 4; i++) {
    await new Promise((r) => setTimeout(r, 100));
    assert.equal((await run(sup, { code: "1 + 1", tenant: "alice" })).result, "2");
  }
});

/** Lets the JavaScript work a request left behind come due (an attack's timer, a fetch). */
const later = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

for (const mode of MODES) {
  Deno.test(`--isolation ${mode}: Emscripten's main loop, armed through ctypes, never runs into a later request`, async () => {
    const sup = await pool(mode);
    // The main loop's frames run from JavaScript timers, with no Python running; their
    // blockers call any function of the table with an argument the request chose. Armed to
    // write 5 into the small int 2 in a frame due after the request is over.
    await run(sup, {
      code: [
        "import ctypes, asyncio",
        "lib = ctypes.CDLL(None)",
        "P = ctypes.c_void_p",
        "fn = lambda name: ctypes.cast(getattr(lib, name), P).value",
        "loop = lib.emscripten_set_main_loop_arg",
        "loop.argtypes = [P, ctypes.c_int, ctypes.c_int, ctypes.c_int]",
        "timing = lib.emscripten_set_main_loop_timing",
        "timing.argtypes = [ctypes.c_int, ctypes.c_int]",
        "push = lib._emscripten_push_uncounted_main_loop_blocker",
        "push.argtypes = [P, ctypes.c_int, P]",
        "loop(fn('emscripten_get_main_loop_timing'), 0, 1000, 0)",
        "await asyncio.sleep(0.05)",
        "timing(0, 300)",
        "await asyncio.sleep(0.02)",
        "push(fn('emscripten_set_main_loop_timing'), 5, None)",
        "push(fn('emscripten_get_main_loop_timing'), id(2) + 12, None)",
        "push(fn('emscripten_cancel_main_loop'), 0, None)",
      ].join("\n"),
      tenant: "evil",
    });
    await run(sup, { code: "'a request meanwhile'", tenant: "alice" });
    await later(600);
    assert.equal((await run(sup, { code: "1 + 1", tenant: "alice" })).result, "2");
  });
}

Deno.test("a thenable's `then`, run by the engine, cannot schedule work into a later request", async () => {
  const sup = await pool("request");
  const before = await sup.workerPids();
  // The engine calls a thenable's `then` in a microtask, outside Python's own calls: here it
  // schedules a timer that would hold the thread for 5 s, after the request is over.
  await run(sup, {
    code: [
      "import time",
      "from pyodide.ffi import to_js",
      "from pyodide.webloop import scheduleCallback",
      "wait = time.sleep.__closure__[0].cell_contents",
      "hold = scheduleCallback.bind.call(wait, None, 5000)",
      "thenable = to_js([])",
      "thenable.then = scheduleCallback.bind(None, hold, 300)",
      "to_js([]).constructor.fromAsync(to_js([thenable]))",
    ].join("\n"),
    tenant: "evil",
  });
  await later(500);
  const r = await sup.execute({ code: "1 + 1", tenant: "alice", timeout_ms: 2000 });
  assert.equal(r.status, "ok", "the thread was not held");
  assert.equal(r.result, "2");
  assert.deepEqual(await sup.workerPids(), before);
});

Deno.test("work a request leaves looping in microtasks does not hold up the next request", async () => {
  const sup = await pool("request");
  // A thenable whose `then` resolves with another, forever: the engine runs each in a
  // microtask, after the answer, so the interpreter never gets back to its event loop.
  const armed = await run(sup, {
    code: [
      "from pyodide.ffi import create_proxy, to_js",
      "def thenable():",
      "    t = to_js([])",
      "    t.then = create_proxy(lambda resolve, reject: resolve(thenable()))",
      "    return t",
      "to_js([]).constructor.fromAsync(to_js([thenable()]))",
      "'armed'",
    ].join("\n"),
    tenant: "evil",
  });
  assert.equal(armed.result, "'armed'");
  // Its interpreter is replaced after a deadline (2 s), well within this request's timeout.
  const r = await sup.execute({ code: "1 + 1", tenant: "alice", timeout_ms: 6000 });
  assert.equal(r.status, "ok", JSON.stringify(r.error));
  assert.equal(r.result, "2");
});

Deno.test("a libffi closure cannot be written into a function-table slot of the image", async () => {
  const sup = await pool("request");
  // float.__repr__'s slot: a trampoline there would be the next tenant's repr(2.5).
  const r = await run(sup, {
    code: [
      "import ctypes",
      "lib = ctypes.CDLL(None)",
      "prep = lib.ffi_prep_closure_loc_js",
      "prep.argtypes = [ctypes.c_uint32] * 5",
      "cif = (ctypes.c_uint32 * 8)(1, 0, 0, ctypes.addressof(ctypes.c_int.in_dll(lib, 'ffi_type_void')))",
      "slot = ctypes.c_uint32.from_address(id(float) + 44).value",
      "prep(16, ctypes.addressof(cif), 0, 0, slot)",
    ].join("\n"),
    tenant: "evil",
  });
  assert.equal(r.result, "1", "refused: FFI_BAD_TYPEDEF");
  assert.equal((await run(sup, { code: "repr(2.5)", tenant: "alice" })).result, "'2.5'");
});

/**
 * Writes a side module with Emscripten's dylink.0 section that imports the interpreter's
 * memory (it could keep data or code that no image puts back) and tries to load it: `outcome`
 * is "loaded", or the error's text.
 */
const LOAD_SIDE_MODULE = [
  "import ctypes",
  "def section(kind, body):",
  "    return bytes([kind, len(body)]) + body",
  "dylink = b'\\x08dylink.0' + bytes([1, 4, 0, 0, 0, 0])",
  "imports = bytes([1, 3]) + b'env' + bytes([6]) + b'memory' + bytes([2, 0, 0])",
  "wasm = b'\\0asm' + bytes([1, 0, 0, 0]) + section(0, dylink) + section(2, imports)",
  "open('/tmp/side.so', 'wb').write(wasm)",
  "try:",
  "    ctypes.CDLL('/tmp/side.so')",
  "    outcome = 'loaded'",
  "except OSError as e:",
  "    outcome = str(e)",
].join("\n");

Deno.test("no Wasm library that shares the interpreter's memory or table loads through ctypes", async () => {
  const sup = await pool("request");
  const r = await run(sup, { code: `${LOAD_SIDE_MODULE}\noutcome` });
  assert.match(r.result!, /not allowed outside package loading/);
});

for (const mode of MODES) {
  Deno.test(`--isolation ${mode}: the dynamic linker's JavaScript records are put back with the image`, async () => {
    const sup = await pool(mode);
    // dlopen's JavaScript half, called with the main module's handle (0), replaces its entry:
    // every later CDLL(None) lookup would fail. A load that fails marks its library "loading",
    // which a later dlopen of that name took for loaded.
    const r = await run(sup, {
      code: [
        LOAD_SIDE_MODULE,
        "dlopen = ctypes.CDLL(None)._dlopen_js",
        "dlopen.restype = ctypes.c_uint32",
        "dlopen.argtypes = [ctypes.c_uint32]",
        "dlopen(0)",
        "try:",
        "    ctypes.CDLL(None).abort",
        "    broken = False",
        "except AttributeError:",
        "    broken = True",
        "'loaded' not in outcome, broken",
      ].join("\n"),
      tenant: "evil",
    });
    assert.equal(r.result, "(True, True)", "the attack took effect in its own request");
    const victim = await run(sup, {
      code: `${LOAD_SIDE_MODULE}\ncallable(ctypes.CDLL(None).abort), outcome`,
      tenant: freshTenant(),
    });
    assert.match(victim.result!, /^\(True, .*not allowed outside package loading/);
  });
}

Deno.test("no host path reaches Python: environment, argv, modules, JavaScript errors, heap", async () => {
  const sup = await pool("request");
  // Base64, so that the probe's own code holds no copy; the heap is copied before they are
  // decoded.
  const hostPaths = [PROJECT.replace(/\/$/, ""), Deno.execPath()]
    .map((path) => new TextEncoder().encode(path).toBase64());
  const r = await run(sup, {
    code: [
      "import base64, os, sys, ctypes",
      "from pyodide.ffi import to_js",
      READ_HEAP,
      "try:",
      "    to_js([]).at.call(None)",
      "except Exception as e:",
      "    js_error = (str(e), str(getattr(e, 'stack', '')))",
      "files = [getattr(m, '__file__', None) or '' for m in list(sys.modules.values())]",
      "texts = [repr(dict(os.environ)), repr(sys.argv), sys.executable, repr(files), repr(js_error)]",
      `paths = [base64.b64decode(p) for p in ${JSON.stringify(hostPaths)}]`,
      "found = [p for p in paths if any(p.decode() in t for t in texts) or p in heap]",
      "(found, js_error[1][:90])",
    ].join("\n"),
  });
  assert.match(r.result!, /^\(\[\], /, r.result!);
  assert.match(r.result!, /TypeError: .*\\n {4}at /, "a JavaScript error's stack was read");
});

Deno.test({
  name: "the isolation pools end cleanly",
  fn: async () => {
    for (const sup of await Promise.all(pools.values())) {
      assert.equal((await sup.close()).code, 0);
    }
  },
});
