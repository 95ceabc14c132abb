/**
 * What a worker's memory reaches under the loads that grow it outside the Wasm heap (issue 14):
 * the peak resident memory (VmHWM) of a fresh worker through each one, with the default
 * settings but the ceiling named, and the answer's status; and what one read of the resident
 * memory costs, which the worker does every 50 ms while code runs.
 *
 * @module
 */

import { Supervisor } from "../tests/helpers/supervisor_process.ts";
import { peakRssBytes } from "../tests/helpers/processes.ts";

/** The ceiling the loads run under: below the default (2048), so that the flood meets it. */
const CEILING_MB = 1024;

const LOADS = {
  /** Files of 64 MiB until a write fails: the quota (--max-fs-mb, 512) stops it. */
  fs_flood:
    "data = b'x' * (64 << 20)\nn = 0\nwhile True:\n    open(f'/tmp/f{n}', 'wb').write(data)\n" +
    "    n += 1",
  /** Ten files of 10 MiB in the run directory: nine come back in base64, 96 MiB at most. */
  returned_files:
    "data = b'x' * (10 << 20)\nfor n in range(10):\n    open(f'f{n}', 'wb').write(data)",
  /** Copies of 100 MiB into JavaScript, 2.5 GB unless stopped at the ceiling. */
  to_js_flood: "from pyodide.ffi import to_js\nb = b'x' * (100 << 20)\n" +
    "kept = [to_js(b) for _ in range(25)]",
};

export interface MemoryReport {
  ceiling_mb: number;
  /** Per load: the answer's status, the worker's peak RSS before it (its boot), and after. */
  loads: Record<keyof typeof LOADS, { status: string; before_mb: number; peak_mb: number }>;
  /** One `Deno.memoryUsage()` in this process, in microseconds. */
  rss_read_us: number;
}

const mb = (bytes: number) => bytes / (1 << 20);

export async function memoryPeaks(progress: (message: string) => void): Promise<MemoryReport> {
  const loads = {} as MemoryReport["loads"];
  for (const [name, code] of Object.entries(LOADS) as [keyof typeof LOADS, string][]) {
    progress(`memory: ${name}`);
    const sup = await Supervisor.start({
      args: [
        "--pool-size",
        "1",
        "--worker-max-rss-mb",
        String(CEILING_MB),
        "--log-level",
        "error",
        // Returned files get 3/8 of the line: 96 MiB.
        "--max-line-bytes",
        String(256 << 20),
      ],
      maxLineBytes: 256 << 20,
    });
    try {
      const [pid] = await sup.workerPids();
      const before = await peakRssBytes(pid);
      // Read while the request runs, and once after: a worker past the ceiling after its
      // answer is replaced, and its process may be gone by then.
      let peak = before;
      let running = true;
      const sampling = (async () => {
        for (let last = false; !last; await new Promise((r) => setTimeout(r, 20))) {
          last = !running;
          peak = Math.max(peak, await peakRssBytes(pid).catch(() => peak));
        }
      })();
      const r = await sup.execute({ code, timeout_ms: 120_000 });
      running = false;
      await sampling;
      loads[name] = { status: r.status, before_mb: mb(before), peak_mb: mb(peak) };
    } finally {
      await sup.close();
    }
  }
  const reads = 10_000;
  const started = performance.now();
  for (let i = 0; i < reads; i++) Deno.memoryUsage();
  return {
    ceiling_mb: CEILING_MB,
    loads,
    rss_read_us: (performance.now() - started) * 1000 / reads,
  };
}

if (import.meta.main) {
  console.log(JSON.stringify(await memoryPeaks((m) => console.error(`bench: ${m}`)), null, 2));
}
