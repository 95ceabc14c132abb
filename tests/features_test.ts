/**
 * Execution features through one shared pool with a local package directory built by the
 * test: server-held and client-held sessions, files, figures, packages, streaming output
 * and top-level await.
 */

import assert from "node:assert/strict";
import { encodeBase64 } from "./helpers/base64.ts";
import { buildPackageDirectory } from "./helpers/packages.ts";
import { waitForExit, waitUntil } from "./helpers/processes.ts";
import { Supervisor } from "./helpers/supervisor_process.ts";

const packagesDir = await buildPackageDirectory();
let shared: Promise<Supervisor> | undefined;
const pool = () =>
  shared ??= Supervisor.start({
    args: [
      "--pool-size",
      "2",
      "--packages-dir",
      packagesDir,
      "--max-file-bytes",
      "1000",
      "--max-line-bytes",
      String(64 << 20),
    ],
  });

const bytes = (b64: string) => Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));

// Sessions

Deno.test("a session keeps its namespace on one worker, even when others are idle", async () => {
  const sup = await pool();
  const first = await sup.execute({ code: "counter = 1", session_id: "s-affinity" });
  const workers = new Set([first.worker_id]);
  for (let i = 0; i < 4; i++) {
    const r = await sup.execute({ code: "counter += 1\ncounter", session_id: "s-affinity" });
    assert.equal(r.status, "ok");
    assert.equal(r.result, String(i + 2));
    workers.add(r.worker_id);
  }
  assert.equal(workers.size, 1);
  const outside = await sup.execute({ code: "'counter' in globals()" });
  assert.equal(outside.result, "False");
  const health = await sup.health();
  const holder = health.workers.find((w) => w.id === first.worker_id)!;
  assert.ok(holder.sessions.includes("s-affinity"));
});

Deno.test("session_bytes carries state across workers; what cannot be pickled is named", async () => {
  const sup = await pool();
  const saved = await sup.execute({
    code: "import math\nitems = [1, 2, 3]\nlabel = 'x'\ndef helper():\n    return 1",
    return_session: true,
  });
  assert.equal(saved.status, "ok");
  assert.ok(saved.session_bytes);
  assert.deepEqual(saved.session_dropped, ["helper"]);
  const results = await Promise.all([1, 2].map(() =>
    sup.execute({
      code: "import time\ntime.sleep(0.2)\nitems.append(4)\n(sum(items), label, round(math.pi, 2))",
      session_bytes: saved.session_bytes,
      return_session: true,
    })
  ));
  assert.notEqual(results[0].worker_id, results[1].worker_id);
  for (const r of results) assert.equal(r.result, "(10, 'x', 3.14)");
});

Deno.test("a large client-held state (20 MiB) goes through the transport", async () => {
  const sup = await pool();
  const saved = await sup.execute({
    code: "blob = bytes(range(256)) * (20 * 4096)",
    return_session: true,
  });
  assert.equal(saved.status, "ok");
  assert.ok(saved.session_bytes!.length > 20 * 1024 * 1024);
  const r = await sup.execute({
    code: "len(blob), blob[:3]",
    session_bytes: saved.session_bytes,
  });
  assert.equal(r.result, "(20971520, b'\\x00\\x01\\x02')");
});

Deno.test("bad session params are -32602; bad session bytes an error result", async () => {
  const sup = await pool();
  const both = await sup.request("execute", { code: "1", session_id: "a", session_bytes: "AAAA" });
  assert.equal(both.error?.code, -32602);
  const notBase64 = await sup.request("execute", { code: "1", session_bytes: "!!" });
  assert.equal(notBase64.error?.data?.field, "session_bytes");
  const garbage = await sup.execute({ code: "1", session_bytes: encodeBase64("not a pickle") });
  assert.equal(garbage.status, "error");
  assert.match(garbage.error!.message, /not a pyodide-pool session state/);
});

// Files

Deno.test("files go in under a fresh directory; created and changed files come back", async () => {
  const sup = await pool();
  const binary = new Uint8Array(256).map((_, i) => i);
  const r = await sup.execute({
    code: [
      "import os",
      "data = open('data.bin', 'rb').read()",
      "open('out.bin', 'wb').write(data[::-1])",
      "with open('sub/dir/note.txt', 'a') as f: f.write(' and more')",
      "os.makedirs('made', exist_ok=True)",
      "open('made/big.txt', 'w').write('z' * 2000)",
      "sorted(os.listdir('.'))",
    ].join("\n"),
    files: [
      { path: "data.bin", content_b64: encodeBase64(binary) },
      { path: "sub/dir/note.txt", content_b64: encodeBase64("hello") },
    ],
  });
  assert.equal(r.status, "ok", JSON.stringify(r.error));
  assert.equal(r.result, "['data.bin', 'made', 'out.bin', 'sub']");
  const byPath = Object.fromEntries(r.files.map((f) => [f.path, f]));
  assert.deepEqual(Object.keys(byPath).sort(), ["made/big.txt", "out.bin", "sub/dir/note.txt"]);
  assert.deepEqual(bytes(byPath["out.bin"].content_b64!), binary.slice().reverse());
  assert.equal(
    new TextDecoder().decode(bytes(byPath["sub/dir/note.txt"].content_b64!)),
    "hello and more",
  );
  assert.equal(byPath["made/big.txt"].size, 2000);
  assert.equal(byPath["made/big.txt"].content_b64, null);
  assert.equal(byPath["made/big.txt"].truncated, true);
  const next = await sup.execute({ code: "import os\nsorted(os.listdir('.'))" });
  assert.equal(next.result, "[]");
});

Deno.test("files come back through links and deep folders; links to folders are not walked", async () => {
  const sup = await pool();
  const r = await sup.execute({
    code: [
      "import os",
      "open('/tmp/outside.txt', 'w').write('linked')",
      "os.symlink('/tmp/outside.txt', 'to_file')",
      "os.symlink('/tmp', 'to_folder')",
      "os.symlink('/nowhere', 'dangling')",
      // Deep enough that a walk by path, each looked up from the root, took seconds.
      "os.makedirs('/'.join(['d'] * 400))",
      "open('/'.join(['d'] * 400) + '/deep.txt', 'w').write('deep')",
    ].join("\n"),
  });
  assert.equal(r.status, "ok", JSON.stringify(r.error));
  const byPath = Object.fromEntries(r.files.map((f) => [f.path, f]));
  const deep = `${Array(400).fill("d").join("/")}/deep.txt`;
  assert.deepEqual(Object.keys(byPath).sort(), [deep, "to_file"]);
  assert.equal(new TextDecoder().decode(bytes(byPath.to_file.content_b64!)), "linked");
  assert.equal(new TextDecoder().decode(bytes(byPath[deep].content_b64!)), "deep");
});

Deno.test("unsafe file paths are rejected with -32602", async () => {
  const sup = await pool();
  for (const path of ["../escape.txt", "/etc/passwd", "a//b", "a/./b", "", "a\\\\b"]) {
    const response = await sup.request("execute", {
      code: "1",
      files: [{ path, content_b64: "" }],
    });
    assert.equal(response.error?.code, -32602, path);
    assert.equal(response.error?.data?.field, "files[0].path");
  }
  const bad = await sup.request("execute", {
    code: "1",
    files: [{ path: "a", content_b64: "%%" }],
  });
  assert.equal(bad.error?.data?.field, "files[0].content_b64");
});

Deno.test("colliding file paths are an error result that leaves nothing behind", async () => {
  const sup = await pool();
  const r = await sup.execute({
    code: "1",
    files: [{ path: "a", content_b64: encodeBase64("x") }, {
      path: "a/b",
      content_b64: encodeBase64("y"),
    }],
  });
  assert.equal(r.status, "error");
  assert.equal(r.error?.type, "FileError");
  assert.match(r.error!.message, /cannot write "a\/b"/);
  assert.deepEqual(r.files, []);
  const next = await sup.execute({ code: "import os\nsorted(os.listdir('.'))" });
  assert.equal(next.result, "[]");
});

// Packages and figures

Deno.test("packages lists the local directory's packages", async () => {
  const listing = await (await pool()).call("packages") as {
    source: string;
    available: { name: string; loadable: boolean }[];
  };
  assert.equal(listing.source, "directory");
  const names = listing.available.map((p) => p.name).sort();
  assert.deepEqual(names, ["brokenpkg", "helperpkg", "matplotlib", "standin"]);
});

Deno.test("a package loaded once, with its dependencies, is available on every worker", async () => {
  const sup = await pool();
  const r = await sup.execute({ code: "import standin\nstandin.VALUE", packages: ["standin"] });
  assert.equal(r.status, "ok", JSON.stringify(r.error));
  assert.equal(r.result, "42");
  const both = await Promise.all(
    [1, 2].map(() =>
      sup.execute({ code: "import time, standin, helperpkg\ntime.sleep(0.2)\nstandin.VALUE" })
    ),
  );
  assert.notEqual(both[0].worker_id, both[1].worker_id);
  for (const x of both) assert.equal(x.result, "42", JSON.stringify(x.error));
});

Deno.test("unknown packages are -32602; a package that fails to load is a clear error", async () => {
  const sup = await pool();
  const unknown = await sup.request("execute", { code: "1", packages: ["nosuchpackage"] });
  assert.equal(unknown.error?.code, -32602);
  assert.match(unknown.error!.message, /unknown package/);
  const broken = await sup.execute({ code: "1", packages: ["brokenpkg"] });
  assert.equal(broken.status, "error");
  assert.equal(broken.error?.type, "PackageLoadError");
  assert.match(broken.error!.message, /brokenpkg/);
  // A failed package does not join the pool-wide set.
  assert.equal((await sup.execute({ code: "'fine'" })).result, "'fine'");
});

Deno.test("open matplotlib figures come back as PNG and are closed", async () => {
  const sup = await pool();
  const env = await sup.execute({
    code:
      "import os\n(os.environ['MPLBACKEND'], open(os.path.expanduser('~/.config/matplotlib/matplotlibrc')).read())",
  });
  assert.equal(env.result, "('Agg', 'backend: Agg\\n')");
  const r = await sup.execute({
    code:
      "import matplotlib.pyplot as plt\nplt.figure(size=3)\nplt.figure(size=5)\nplt.get_fignums()",
    packages: ["matplotlib"],
  });
  assert.equal(r.status, "ok", JSON.stringify(r.error));
  assert.equal(r.figures.length, 2);
  const widths = r.figures.map((f) => {
    const png = bytes(f.data_b64);
    assert.deepEqual([...png.slice(1, 4)], [0x50, 0x4e, 0x47]); // "PNG"
    return new DataView(png.buffer).getUint32(16);
  });
  assert.deepEqual(widths, [3, 5]);
  const after = await sup.execute({
    code: "import matplotlib.pyplot as plt\nplt.get_fignums()",
  });
  assert.equal(after.result, "[]");
  assert.deepEqual(after.figures, []);
});

// Streaming and async

Deno.test("stream: true sends output notifications in order, before the result", async () => {
  const sup = await pool();
  const before = sup.received.length;
  const response = await sup.request("execute", {
    code:
      "import sys, time\nfor i in range(3):\n    print(f'line {i}', flush=True)\n    time.sleep(0.05)\nprint('oops', file=sys.stderr)",
    stream: true,
  }, "streamed-1");
  const lines = sup.received.slice(before) as {
    id?: string;
    method?: string;
    params?: { id: string; stream: string; text: string };
  }[];
  const notes = lines.filter((l) => l.method === "output" && l.params?.id === "streamed-1");
  const resultIndex = lines.findIndex((l) => l.id === "streamed-1");
  assert.ok(notes.length >= 3);
  assert.ok(lines.indexOf(notes.at(-1)!) < resultIndex, "notifications come before the result");
  const stdout = notes.filter((n) => n.params!.stream === "stdout").map((n) => n.params!.text).join(
    "",
  );
  const result = response.result as { stdout: string; stderr: string };
  assert.equal(stdout, "line 0\nline 1\nline 2\n");
  assert.equal(result.stdout, stdout);
  assert.equal(
    notes.filter((n) => n.params!.stream === "stderr").map((n) => n.params!.text).join(""),
    "oops\n",
  );
});

Deno.test("top-level await is stopped by the timeout without losing the worker", async () => {
  const sup = await pool();
  const r = await sup.execute({ code: "import asyncio\nawait asyncio.sleep(60)", timeout_ms: 300 });
  assert.equal(r.status, "timeout");
  assert.match(r.error!.message, /stopped by interrupt/);
  assert.ok(r.duration_ms < 2000, `took ${r.duration_ms} ms`);
  const again = await sup.execute({ code: "import asyncio\nawait asyncio.sleep(0.01)\n'awake'" });
  assert.equal(again.result, "'awake'");
});

Deno.test("async code that runs callbacks inside one (run_sync) is still stopped by an interrupt", async () => {
  const sup = await pool();
  const r = await sup.execute({
    code: [
      "import asyncio",
      "from pyodide.ffi import run_sync",
      "await asyncio.sleep(0)",
      "run_sync(asyncio.sleep(0.05))",
      "print('after')",
      "while True: pass",
    ].join("\n"),
    timeout_ms: 300,
  });
  assert.equal(r.status, "timeout");
  assert.match(r.error!.message, /stopped by interrupt/);
  assert.equal(r.stdout, "after\n");
});

// Crash: sessions are lost, packages stay pool-wide

Deno.test("a session whose worker died gets -32004; its replacement still has the packages", async () => {
  const sup = await pool();
  const r = await sup.execute({ code: "kept = 1", session_id: "s-doomed" });
  const victim = (await sup.health()).workers.find((w) => w.id === r.worker_id)!;
  Deno.kill(victim.pid, "SIGKILL");
  await waitForExit([victim.pid]);
  await waitUntil("the replacement", async () => {
    const h = await sup.health();
    return h.ready_workers === 2 && !h.workers.some((w) => w.id === victim.id);
  });
  const lost = await sup.request("execute", { code: "kept", session_id: "s-doomed" });
  assert.equal(lost.error?.code, -32004);
  assert.match(lost.error!.message, /was lost when worker/);
  const both = await Promise.all(
    [1, 2].map(() => sup.execute({ code: "import time, standin\ntime.sleep(0.2)\nstandin.VALUE" })),
  );
  for (const x of both) assert.equal(x.result, "42", JSON.stringify(x.error));
});

Deno.test({
  name: "close the features pool",
  fn: async () => {
    const sup = await pool();
    const pids = await sup.workerPids();
    assert.equal((await sup.close()).code, 0);
    await waitForExit(pids);
    await Deno.remove(packagesDir, { recursive: true });
  },
});
