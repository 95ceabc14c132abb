/**
 * Memory outside the Wasm heap is bounded too: what a request holds in the in-memory file
 * system (`--max-fs-mb`), what it returns (output and files), and the worker process's whole
 * resident memory (`--worker-max-rss-mb`). Through real pools, in `--isolation request` and
 * `none` (where there is no memory image).
 */

import assert from "node:assert/strict";
import { Supervisor } from "./helpers/supervisor_process.ts";
import { metricsPortIn, scrapeMetrics } from "./helpers/metrics.ts";
import { peakRssBytes, waitFor, waitForExit, waitUntil } from "./helpers/processes.ts";

const MiB = 1 << 20;
const FS_MB = 256;
/**
 * Above what the other caps allow together: the boot (about 200 MB), a 256 MiB file system,
 * and the answer that returns 96 MiB of files (its copies in base64 took 660 MB more, measured).
 */
const RSS_MB = 1536;

/** The most resident memory process `pid` ever had (its VmHWM) is under `bytes`. */
async function assertPeakUnder(pid: number, bytes: number): Promise<void> {
  const peak = await peakRssBytes(pid);
  assert.ok(peak < bytes, `peak rss ${peak}, over ${bytes}`);
}

const workersOf = async (sup: Supervisor) => (await sup.health()).workers;

/** Writes files of 64 MiB to /tmp until a write fails; prints how, and how many it wrote. */
const FLOOD = `
import errno
data = b'x' * (64 << 20)
n = 0
try:
    while True:
        with open(f'/tmp/flood-{n}', 'wb') as f:
            f.write(data)
        n += 1
except OSError as e:
    print(errno.errorcode[e.errno], n)
    raise
`;

/** Fills the quota exactly (the image's files do not count), then checks that each way to grow fails. */
const FILL_EXACTLY = `
import errno, os
data = b'x' * (64 << 20)
for n in range(4):
    with open(f'/tmp/fill-{n}', 'wb') as f:
        f.write(data)
def refused(grow):
    try:
        grow()
    except OSError as e:
        return errno.errorcode[e.errno]
    return 'written'
fd = os.open('/tmp/fill-0', os.O_WRONLY)
print('append', refused(lambda: os.pwrite(fd, b'1', 64 << 20)))
print('write past the end', refused(lambda: os.pwrite(fd, b'1', 100 << 20)))
print('truncate up', refused(lambda: os.ftruncate(fd, 65 << 20)))
os.close(fd)
os.remove('/tmp/fill-1')
with open('/tmp/fill-again', 'wb') as f:
    f.write(data)
print('after a removal', 'written')
`;

for (const isolation of ["request", "none"]) {
  let shared: Promise<Supervisor> | undefined;
  const pool = () =>
    shared ??= Supervisor.start({
      args: [
        "--pool-size",
        "1",
        "--isolation",
        isolation,
        "--max-fs-mb",
        String(FS_MB),
        "--worker-max-rss-mb",
        String(RSS_MB),
        "--metrics-port",
        "0",
        // Returned files get 3/8 of the line: 96 MiB.
        "--max-line-bytes",
        String(256 * MiB),
      ],
      // The metrics port is logged at info.
      env: { PYODIDE_LOG_LEVEL: "info" },
      maxLineBytes: 256 * MiB,
    });

  Deno.test(`${isolation}: a file system flood stops at the quota with ENOSPC (fs_limit); memory stays under the ceiling`, async () => {
    const sup = await pool();
    const r = await sup.execute({ code: FLOOD });
    assert.equal(r.status, "fs_limit", JSON.stringify(r.error));
    // Four files of 64 MiB fill the 256 MiB quota; the fifth write is refused.
    assert.equal(r.stdout, "ENOSPC 4\n");
    assert.equal(r.error?.type, "OSError");
    assert.match(r.error!.message, new RegExp(`capped at ${FS_MB} MB`));
    assert.match(r.error!.traceback, /OSError: \[Errno 51\] No space left on device/);
    const [worker] = await workersOf(sup);
    assert.equal(worker.id, r.worker_id);
    // The request's files were removed after it, with its quota.
    assert.equal(worker.fs_bytes, 0);
    // As the worker measured it after the request, and its peak during it.
    assert.ok(worker.rss_bytes! < RSS_MB * MiB, `rss ${worker.rss_bytes}`);
    await assertPeakUnder(worker.pid, RSS_MB * MiB);
  });

  Deno.test(`${isolation}: the image's files do not count; growing past the quota fails every way; removed files free it`, async () => {
    const sup = await pool();
    for (let round = 0; round < 2; round++) {
      const r = await sup.execute({ code: FILL_EXACTLY });
      assert.equal(r.status, "ok", JSON.stringify(r.error));
      assert.equal(
        r.stdout,
        "append ENOSPC\nwrite past the end ENOSPC\ntruncate up ENOSPC\nafter a removal written\n",
      );
    }
    const stats = await sup.stats();
    assert.equal(stats.workers[0].fs_bytes, 0);
  });

  Deno.test(`${isolation}: output and returned files are bounded by their caps`, async () => {
    const sup = await pool();
    const output = await sup.execute({
      code: "import sys\nwhile True:\n    sys.stderr.write('e' * 10_000)",
    });
    assert.equal(output.status, "output_limit");
    // --max-output-bytes, 1 MiB by default.
    assert.equal(output.stderr.length, MiB);
    // 20 files of 10 MiB (each at --max-file-bytes, all within the quota): contents come back for as many as fit in
    // 3/8 of the line between worker and supervisor (256 MiB), the others without.
    const files = await sup.execute({
      code: "data = b'x' * (10 << 20)\nfor n in range(20):\n    open(f'f{n}', 'wb').write(data)",
    });
    assert.equal(files.status, "ok", JSON.stringify(files.error));
    assert.equal(files.files.length, 20);
    const returned = files.files.filter((f) => f.content_b64 !== null);
    assert.equal(returned.length, 9);
    assert.ok(files.files.every((f) => f.size === 10 * MiB));
    assert.ok(files.files.filter((f) => f.content_b64 === null).every((f) => f.truncated));
    // The worker answered, and serves on; its memory never came near the ceiling.
    assert.equal((await sup.execute({ code: "'next'" })).worker_id, files.worker_id);
    const [worker] = await workersOf(sup);
    await assertPeakUnder(worker.pid, RSS_MB * MiB);
  });

  Deno.test(`${isolation}: names are limited as Linux limits them, and paths count toward the files returned`, async () => {
    const sup = await pool();
    const names = await sup.execute({
      code: [
        "import errno, os",
        "def made(make):",
        "    try:",
        "        make()",
        "        return 'made'",
        "    except OSError as e:",
        "        return errno.errorcode[e.errno]",
        "open('/tmp/ok', 'w').close()",
        "[made(make) for make in (",
        "    lambda: open('/tmp/' + 'n' * 256, 'w'),",
        "    lambda: os.mkdir('/tmp/' + 'd' * 256),",
        "    lambda: open('/tmp/' + 'é' * 128, 'w'),",
        "    lambda: os.symlink('y' * 4097, '/tmp/link'),",
        "    lambda: os.rename('/tmp/ok', '/tmp/' + 'r' * 256),",
        "    lambda: open('/tmp/' + 'n' * 255, 'w'),",
        "    lambda: os.symlink('y' * 4096, '/tmp/link'),",
        ")]",
      ].join("\n"),
    });
    assert.equal(
      names.result,
      `[${Array(5).fill("'ENAMETOOLONG'").join(", ")}, 'made', 'made']`,
      JSON.stringify(names.error),
    );
    // Contents fill the 96 MiB returned (3/8 of the 256 MiB line) but for 100 KiB; 100 paths of
    // 3.7 KiB do not all fit after them.
    const files = await sup.execute({
      code: [
        "import os",
        "data = b'x' * (10 << 20)",
        "for n in range(9):",
        "    open(f'big{n}', 'wb').write(data)",
        "open('fill', 'wb').write(b'x' * ((6 << 20) - (100 << 10)))",
        "deep = '/'.join(['d' * 250] * 15)",
        "os.makedirs(deep)",
        "for i in range(100):",
        "    open(f'{deep}/{i:03d}', 'w').close()",
      ].join("\n"),
    });
    assert.equal(files.status, "ok", JSON.stringify(files.error));
    assert.ok(files.files_omitted! > 50 && files.files_omitted! < 100, String(files.files_omitted));
    assert.equal(files.files.length + files.files_omitted!, 110);
  });

  Deno.test(`${isolation}: an error's message and traceback are cut at the output cap`, async () => {
    const sup = await pool();
    const r = await sup.execute({ code: "raise ValueError('x' * (4 << 20))" });
    assert.equal(r.status, "error");
    assert.equal(r.error!.message, "x".repeat(MiB) + "...[truncated]");
    assert.ok(r.error!.traceback.length <= MiB + 20, String(r.error!.traceback.length));
  });

  Deno.test({
    name: `${isolation}: close the memory limits pool`,
    fn: async () => {
      const sup = await pool();
      const pids = await sup.workerPids();
      assert.equal((await sup.close()).code, 0);
      await waitForExit(pids);
    },
  });
}

Deno.test("memory a run holds outside the Wasm heap stops it at --worker-max-rss-mb (memory_limit)", async () => {
  const sup = await Supervisor.start({
    args: ["--pool-size", "1", "--worker-max-rss-mb", String(RSS_MB)],
  });
  try {
    const [pid] = await sup.workerPids();
    // Copies of a bytes object into JavaScript: 2.5 GB, past the heap and its cap, unless stopped.
    const r = await sup.execute({
      code: "from pyodide.ffi import to_js\nb = b'x' * (100 << 20)\n" +
        "kept = [to_js(b) for _ in range(25)]",
      timeout_ms: 60_000,
    });
    assert.equal(r.status, "memory_limit", JSON.stringify(r.error));
    assert.equal(r.error?.type, "MemoryError");
    assert.match(r.error!.message, new RegExp(`passed its ceiling of ${RSS_MB} MB`));
    // Checked every 50 ms: it goes past by what it adds meanwhile (a copy of 100 MiB is one step).
    await assertPeakUnder(pid, 1.5 * RSS_MB * MiB);
    assert.equal((await sup.execute({ code: "1 + 1" })).result, "2");
  } finally {
    await sup.close();
  }
});

Deno.test("a worker whose memory passed --worker-max-rss-mb after its run is replaced once it answered", async () => {
  // The run holds about 310 MB (the boot, 100 MiB of files); its answer, which returns 90 MiB
  // of them in base64, takes the worker past 768 MB.
  const sup = await Supervisor.start({
    args: [
      "--pool-size",
      "1",
      "--worker-max-rss-mb",
      "768",
      "--metrics-port",
      "0",
      "--max-line-bytes",
      String(256 * MiB),
    ],
    env: { PYODIDE_LOG_LEVEL: "info" },
    maxLineBytes: 256 * MiB,
  });
  try {
    const [old] = await workersOf(sup);
    const r = await sup.execute({
      code: "data = b'x' * (10 << 20)\nfor n in range(10):\n    open(f'f{n}', 'wb').write(data)",
    });
    assert.equal(r.status, "ok", JSON.stringify(r.error));
    assert.equal(r.files.filter((f) => f.content_b64 !== null).length, 9);
    await waitUntil("the replacement", async () => {
      const workers = await workersOf(sup);
      return workers.length === 1 && workers[0].id !== old.id && workers[0].state === "idle";
    });
    await waitForExit([old.pid]);
    const stats = await sup.stats();
    assert.deepEqual(stats.restarts, { rss_grown: 1 });
    const port = await waitFor("the metrics URL", () => Promise.resolve(metricsPortIn(sup.stderr)));
    const metrics = await scrapeMetrics(port);
    assert.equal(metrics.get('pyodide_pool_worker_restarts_total{reason="rss_grown"}'), 1);
    assert.equal((await sup.execute({ code: "'fine'" })).result, "'fine'");
  } finally {
    await sup.close();
  }
});
