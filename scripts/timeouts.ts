/**
 * Measures how fast a timeout is answered and how soon the same worker serves again, for
 * code that loops, sleeps, or swallows interrupts. One worker, so "the next request" runs
 * where the timed-out one did.
 *
 *     deno run -A scripts/timeouts.ts [--rounds N] [--json]
 *
 * @module
 */

import { parseArgs } from "node:util";
import { Supervisor } from "../tests/helpers/supervisor_process.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    rounds: { type: "string", default: "5" },
    json: { type: "boolean", default: false },
  },
});
const TIMEOUT_MS = 200;
const CASES: Record<string, string> = {
  "while True": "while True: pass",
  "time.sleep(60)": "import time\ntime.sleep(60)",
  "except KeyboardInterrupt once":
    "try:\n    while True: pass\nexcept KeyboardInterrupt:\n    pass\nwhile True: pass",
  "except BaseException loop":
    "while True:\n    try:\n        while True: pass\n    except BaseException:\n        pass",
};

const pool = await Supervisor.start({ args: ["--pool-size", "1", "--log-level", "error"] });
const rows: Record<string, unknown>[] = [];
for (const [name, code] of Object.entries(CASES)) {
  const answers: number[] = [];
  const nexts: number[] = [];
  const steps = new Set<string>();
  const workers = new Set<string>();
  for (let round = 0; round < Number(values.rounds); round++) {
    const t0 = performance.now();
    const r = await pool.execute({ code, timeout_ms: TIMEOUT_MS });
    const answered = performance.now();
    if (r.status !== "timeout") throw new Error(`${name}: expected timeout, got ${r.status}`);
    steps.add(/stopped by (\w+)/.exec(r.error?.message ?? "")?.[1] ?? "?");
    const next = await pool.execute({ code: "1 + 1" });
    if (next.status !== "ok") throw new Error(`${name}: next request failed`);
    workers.add(`${r.worker_id}->${next.worker_id}`);
    answers.push(answered - t0 - TIMEOUT_MS);
    nexts.push(performance.now() - t0 - TIMEOUT_MS);
    // Let a replaced worker's successor settle before the next round.
    await new Promise((resolve) => setTimeout(resolve, 300));
  }
  const median = (xs: number[]) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  rows.push({
    case: name,
    stopped_by: [...steps].join(","),
    answer_after_expiry_ms: +median(answers).toFixed(1),
    next_ok_after_expiry_ms: +median(nexts).toFixed(1),
    workers: [...workers].join(" "),
  });
}
await pool.close();
if (values.json) console.log(JSON.stringify(rows, null, 2));
else console.table(rows);
