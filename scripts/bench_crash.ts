/**
 * What a fatal request costs (issue 14): the time from its answer until the worker answers
 * again, with the image put back in place (`--isolation request`) and with the interpreter
 * replaced (`--isolation none`, which has no image); and the throughput of a load in which 1
 * request in 20 ends its interpreter, against the same load without, in interleaved rounds.
 *
 * @module
 */

import { Supervisor } from "../tests/helpers/supervisor_process.ts";

const TRIVIAL = { code: "x = 1 + 1" };
const FATAL = { code: "import os\nos.abort()" };

export interface CrashReport {
  /** Median time from a crash's answer to the next answer, less a trivial request's median. */
  recovery_in_place_ms: number;
  /** The worker's own after-work (the image put back), p50, crashes and trivial runs alike. */
  restore_in_worker_p50_ms: number;
  recovery_by_interpreter_replacement_ms: number;
  requests_per_second_clean: number;
  requests_per_second_one_in_20_fatal: number;
}

const median = (values: number[]) => values.toSorted((a, b) => a - b)[values.length >> 1];

/**
 * The time a trivial request takes right after a fatal one, less its usual time; and the p50 of
 * the worker's after-work.
 */
async function recoveryMs(
  isolation: string,
  samples: number,
): Promise<{ visible: number; inWorker: number }> {
  const sup = await Supervisor.start({
    args: ["--pool-size", "1", "--isolation", isolation, "--log-level", "error"],
  });
  try {
    const timed = async (params: Record<string, unknown>) => {
      const started = performance.now();
      await sup.execute(params);
      return performance.now() - started;
    };
    for (let i = 0; i < 50; i++) await sup.execute(TRIVIAL);
    const after: number[] = [];
    const usual: number[] = [];
    for (let i = 0; i < samples; i++) {
      await sup.execute(FATAL);
      after.push(await timed(TRIVIAL));
      // The replacement of the process (without the image) must not fall on the next sample.
      if (isolation === "none") await settle(sup);
      usual.push(await timed(TRIVIAL));
    }
    const stats = await sup.stats();
    return { visible: median(after) - median(usual), inWorker: stats.reset.p50_ms };
  } finally {
    await sup.close();
  }
}

/** Waits until the pool has its one worker ready and no replacement under way. */
async function settle(sup: Supervisor): Promise<void> {
  for (;;) {
    const health = await sup.health();
    if (health.ready_workers === 1 && health.workers.length === 1) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Requests per second with 32 in flight; every `fatalEvery`-th one fatal, if given. */
async function throughput(sup: Supervisor, count: number, fatalEvery?: number): Promise<number> {
  let sent = 0;
  const started = performance.now();
  await Promise.all(Array.from({ length: 32 }, async () => {
    while (sent < count) {
      const i = sent++;
      await sup.execute(fatalEvery && i % fatalEvery === 0 ? FATAL : TRIVIAL);
    }
  }));
  return count / ((performance.now() - started) / 1000);
}

export async function crashCosts(
  { rounds, progress }: { rounds: number; progress: (message: string) => void },
): Promise<CrashReport> {
  progress("crash recovery in place");
  const inPlace = await recoveryMs("request", 20);
  progress("crash recovery by interpreter replacement");
  const replaced = await recoveryMs("none", 5);
  progress("mixed load with fatal requests");
  const sup = await Supervisor.start({ args: ["--pool-size", "2", "--log-level", "error"] });
  const clean: number[] = [];
  const mixed: number[] = [];
  try {
    await throughput(sup, 500);
    for (let round = 0; round < rounds; round++) {
      // Interleaved, in alternating order: the host's drift falls on both alike.
      const order = round % 2 === 0 ? [clean, mixed] : [mixed, clean];
      for (const list of order) {
        list.push(await throughput(sup, 2000, list === mixed ? 20 : undefined));
      }
    }
  } finally {
    await sup.close();
  }
  return {
    recovery_in_place_ms: inPlace.visible,
    restore_in_worker_p50_ms: inPlace.inWorker,
    recovery_by_interpreter_replacement_ms: replaced.visible,
    requests_per_second_clean: median(clean),
    requests_per_second_one_in_20_fatal: median(mixed),
  };
}

if (import.meta.main) {
  const report = await crashCosts({ rounds: 4, progress: (m) => console.error(`bench: ${m}`) });
  console.log(JSON.stringify(report, null, 2));
}
