/**
 * The memory image through real pools: what each `--isolation` mode keeps and puts back,
 * sessions parked and resumed whole, the parking limit, resets counted in `stats`, JavaScript
 * callbacks that outlive their request, and a long mixed load on one worker.
 */

import assert from "node:assert/strict";
import { Supervisor } from "./helpers/supervisor_process.ts";
import type { ExecuteResult } from "../lib/protocol.ts";
import { waitUntil } from "./helpers/processes.ts";

async function ok(sup: Supervisor, params: Record<string, unknown>): Promise<ExecuteResult> {
  const r = await sup.execute(params);
  assert.equal(r.status, "ok", JSON.stringify(r.error));
  return r;
}

Deno.test("every request draws its own random numbers, though each starts from one image", async () => {
  const sup = await Supervisor.start({ args: ["--pool-size", "1"] });
  try {
    const draws = [];
    for (let i = 0; i < 4; i++) {
      draws.push((await ok(sup, { code: "import random\nrandom.getrandbits(64)" })).result);
    }
    assert.equal(new Set(draws).size, 4);
  } finally {
    await sup.close();
  }
});

Deno.test("a session comes back whole after other tenants ran: objects, generators, modules", async () => {
  const sup = await Supervisor.start({ args: ["--pool-size", "1"] });
  try {
    const session = { session_id: "notebook", tenant: "alice" };
    await ok(sup, {
      code: [
        "import fractions",
        "class Account:",
        "    def __init__(self): self.balance = 10",
        "account = Account()",
        "def make_counter():",
        "    n = 0",
        "    def bump():",
        "        nonlocal n",
        "        n += 1",
        "        return n",
        "    return bump",
        "bump = make_counter(); bump()",
        "squares = (i * i for i in range(10)); next(squares); next(squares)",
        "big = list(range(200_000))",
      ].join("\n"),
      ...session,
    });
    // Other tenants, one of them allocating far more than the session did.
    await ok(sup, { code: "x = bytearray(50 << 20)\nlen(x)", tenant: "bob" });
    await ok(sup, { code: "import fractions\nfractions.Fraction(1, 3)" });
    const back = await ok(sup, {
      code: "account.balance += 5\n" +
        "(account.balance, bump(), next(squares), fractions.Fraction(1, 2), len(big))",
      ...session,
    });
    assert.equal(back.result, "(15, 2, 4, Fraction(1, 2), 200000)");
    // Counted as the worker settles the request, after its answer.
    await waitUntil("the park and the resume are counted", async () => {
      const stats = await sup.stats();
      return stats.park.count >= 1 && stats.resume.count >= 1;
    }, 5_000);
  } finally {
    await sup.close();
  }
});

Deno.test("a session belongs to the tenant that created it, from its first request on", async () => {
  const sup = await Supervisor.start({ args: ["--pool-size", "1"] });
  try {
    // Another tenant's request that names it while its first request still runs.
    const first = sup.execute({
      code: "import time\nx = 1\ntime.sleep(0.3)",
      session_id: "owned",
      tenant: "alice",
    });
    await new Promise((r) => setTimeout(r, 50));
    const early = await sup.request("execute", { code: "x", session_id: "owned", tenant: "bob" });
    assert.equal(early.error?.code, -32602, JSON.stringify(early));
    assert.equal((await first).status, "ok");
    const other = await sup.request("execute", { code: "x", session_id: "owned", tenant: "bob" });
    assert.equal(other.error?.code, -32602);
    assert.equal(other.error?.data?.field, "tenant");
    const none = await sup.request("execute", { code: "x", session_id: "owned" });
    assert.equal(none.error?.code, -32602);
    assert.equal((await ok(sup, { code: "x", session_id: "owned", tenant: "alice" })).result, "1");
  } finally {
    await sup.close();
  }
});

Deno.test("past --max-parked-mb parked sessions are compressed, then the least recently used dropped", async () => {
  const sup = await Supervisor.start({ args: ["--pool-size", "1", "--max-parked-mb", "12"] });
  try {
    // 24 MiB that deflate to almost nothing: compressed, kept, and whole when resumed.
    await ok(sup, { code: "data = b'pool' * (6 << 20)", session_id: "compressible" });
    await ok(sup, { code: "1" });
    const back = await ok(sup, {
      code: "(len(data), data[:8], data.count(b'pool'))",
      session_id: "compressible",
    });
    assert.equal(back.result, `(${24 << 20}, b'poolpool', ${6 << 20})`);
    await ok(sup, { code: "small = 1", session_id: "old" });
    // Random bytes do not compress: parked after "old", "a" and "b" (about 7 MB each) take the
    // worker past its limit together, though each fits alone.
    for (const id of ["a", "b"]) {
      await ok(sup, { code: "import os\ndata = os.urandom(6 << 20)", session_id: id });
    }
    await ok(sup, { code: "1" });
    assert.equal((await ok(sup, { code: "len(data)", session_id: "b" })).result, `${6 << 20}`);
    const old = await sup.request("execute", { code: "small", session_id: "old" });
    assert.equal(old.error?.code, -32004, JSON.stringify(old));
    assert.match(old.error!.message, /max-parked-mb/);
    assert.match(String(old.error?.data?.reason), /least recently used/);
    const health = await sup.health();
    assert.ok(!health.workers[0].sessions.includes("old"));
    // Said once: the id then names a new session.
    const again = await ok(sup, { code: "'small' in globals()", session_id: "old" });
    assert.equal(again.result, "False");
  } finally {
    await sup.close();
  }
});

Deno.test("a session parked past the limit by a larger one is not evicted for it", async () => {
  const sup = await Supervisor.start({ args: ["--pool-size", "1", "--max-parked-mb", "32"] });
  try {
    await ok(sup, { code: "secret = 'alice'", session_id: "small", tenant: "alice" });
    // 40 MB that do not compress: alone past the limit, it is the one dropped.
    await ok(sup, {
      code: "import os\nblob = os.urandom(40 << 20)",
      session_id: "huge",
      tenant: "evil",
    });
    const back = await ok(sup, { code: "secret", session_id: "small", tenant: "alice" });
    assert.equal(back.result, "'alice'");
    // Its notice is its tenant's: another tenant is refused, and does not use it up.
    const other = await sup.request("execute", { code: "1", session_id: "huge", tenant: "alice" });
    assert.equal(other.error?.code, -32602, JSON.stringify(other));
    const huge = await sup.request("execute", { code: "1", session_id: "huge", tenant: "evil" });
    assert.equal(huge.error?.code, -32004);
    assert.match(huge.error!.message, /more than --max-parked-mb \(32 MB\) alone/);
  } finally {
    await sup.close();
  }
});

Deno.test("stats count the resets by kind: the image between tenants, Python's within one", async () => {
  const sup = await Supervisor.start({ args: ["--pool-size", "1", "--isolation", "tenant"] });
  try {
    for (const tenant of ["a", "a", "a", "b"]) await ok(sup, { code: "1", tenant });
    await ok(sup, { code: "1" });
    // The after-work of the last request is reported once it is done.
    await new Promise((r) => setTimeout(r, 200));
    const stats = await sup.stats();
    // After each tenant request, Python's reset; the image before "b" (the tenant changed),
    // before the request of no tenant, and after it (no one comes back to its state).
    assert.deepEqual(stats.resets, { python: 4, image: 3 });
    assert.equal(stats.reset.count, 7);
  } finally {
    await sup.close();
  }
});

Deno.test("callbacks a request leaves on JavaScript's event loop never run in a later one", async () => {
  const sup = await Supervisor.start({ args: ["--pool-size", "1"] });
  try {
    const [pid] = await sup.workerPids();
    await ok(sup, {
      code: [
        "import asyncio",
        "from pyodide.ffi import create_proxy",
        "loop = asyncio.get_event_loop()",
        "spy = create_proxy(lambda: print('LEAKED'))",
        "for delay in (0, 0.01, 0.05, 0.1):",
        "    loop.call_later(delay, print, 'LEAKED')",
      ].join("\n"),
    });
    const later = await ok(sup, {
      code: "import asyncio\nawait asyncio.sleep(0.3)\n'waited'",
    });
    assert.deepEqual([later.result, later.stdout], ["'waited'", ""]);
    assert.deepEqual(await sup.workerPids(), [pid]);
  } finally {
    await sup.close();
  }
});

Deno.test("a fetch a request left running ends with it and harms no later request", async () => {
  const slow = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async () => {
    await new Promise((r) => setTimeout(r, 300));
    return new Response("late");
  });
  const sup = await Supervisor.start({
    args: ["--pool-size", "1", "--worker-allow-net", `127.0.0.1:${slow.addr.port}`],
  });
  try {
    const [pid] = await sup.workerPids();
    await ok(sup, {
      code: "import asyncio\nfrom pyodide.http import pyfetch\n" +
        `task = asyncio.ensure_future(pyfetch('http://127.0.0.1:${slow.addr.port}/'))\n'left'`,
    });
    const later = await ok(sup, { code: "import asyncio\nawait asyncio.sleep(0.6)\n6 * 7" });
    assert.equal(later.result, "42");
    assert.equal((await ok(sup, { code: "'alive'" })).result, "'alive'");
    assert.deepEqual(await sup.workerPids(), [pid]);
  } finally {
    await sup.close();
    await slow.shutdown();
  }
});

/** Requests that touch every kind of state the image holds, for the mixed load below. */
const WORKLOADS = [
  "sum(range(10_000))",
  "import json\njson.dumps({'a': [1, 2, 3]})",
  "1 / 0",
  "from pyodide.ffi import to_js\nlen(to_js(list(range(100))))",
  "from pyodide.ffi import create_proxy, to_js\np = create_proxy(lambda x: x + 1)\nto_js([p])[0](1)",
  "import asyncio\nawait asyncio.sleep(0.001)\n'slept'",
  "open('/tmp/scratch.txt', 'w').write('x' * 10_000)",
  "import os\nfd = os.open('/home/pyodide/held.txt', os.O_CREAT | os.O_WRONLY)\nos.write(fd, b'x')",
  "import os\nr, w = os.pipe()\nos.write(w, b'pending')",
  "import ctypes\nCMP = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_int), " +
  "ctypes.POINTER(ctypes.c_int))\nvalues = (ctypes.c_int * 5)(5, 1, 4, 2, 3)\n" +
  "ctypes.CDLL(None).qsort(values, 5, 4, CMP(lambda a, b: a[0] - b[0]))\nlist(values)",
  "x = bytearray(8 << 20)\nlen(x)",
  "def f(n):\n    return n if n == 0 else f(n - 1)\nf(500)",
  "import sys\nsys.setrecursionlimit(50)\nimport math\nmath.pi = 3",
  "import decimal\ndecimal.getcontext().prec = 5\nstr(decimal.Decimal(1) / 3)",
];

Deno.test("a long mixed load across tenants and sessions keeps one worker up and correct", async () => {
  const sup = await Supervisor.start({ args: ["--pool-size", "1"] });
  try {
    const [pid] = await sup.workerPids();
    for (let round = 0; round < 12; round++) {
      for (const [i, code] of WORKLOADS.entries()) {
        // Sessions keep their tenant; other requests change tenant often.
        const owner = i % 4 === 0
          ? { session_id: `s${i % 3}`, tenant: `t${i % 3}` }
          : { tenant: `t${(round + i) % 3}` };
        const r = await sup.execute({ code, ...owner });
        assert.ok(["ok", "error"].includes(r.status), JSON.stringify(r));
      }
      const check = await ok(sup, {
        code: "import math, sys, decimal, os\n" +
          "(math.pi, sys.getrecursionlimit(), decimal.getcontext().prec, " +
          "os.path.exists('/tmp/scratch.txt'))",
      });
      assert.equal(check.result, "(3.141592653589793, 1000, 28, False)");
    }
    assert.deepEqual(await sup.workerPids(), [pid]);
    const stats = await sup.stats();
    assert.deepEqual(stats.restarts, {});
  } finally {
    await sup.close();
  }
});
