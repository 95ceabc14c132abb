/**
 * The chaos run shared by the chaos test and `scripts/chaos.ts`: many requests through the
 * pool while a random busy worker is SIGKILLed at a fixed interval, counting every response
 * by id. The pool promises: none lost, none duplicated, and only requests that were running
 * on a killed worker fail, with -32001.
 *
 * @module
 */

import type { Supervisor } from "./supervisor_process.ts";

export interface ChaosOptions {
  requests: number;
  /** Kill a random busy worker after every this many responses. */
  killEvery: number;
  /** Requests kept in flight at once. */
  inFlight: number;
}

export interface ChaosSummary {
  requests: number;
  ok: number;
  workerDied: number;
  /** Failures other than -32001 on a killed worker, or wrong results. */
  unexpected: number;
  lost: number;
  duplicated: number;
  kills: number;
  seconds: number;
}

/**
 * @example
 * ```ts ignore
 * const { summary } = await runChaos(pool, { requests: 2000, killEvery: 50, inFlight: 16 });
 * ```
 */
export async function runChaos(
  sup: Supervisor,
  options: ChaosOptions,
): Promise<{ summary: ChaosSummary; failures: unknown[] }> {
  const started = performance.now();
  const responses = new Map<string, number>();
  const killed = new Set<string>();
  const failures: unknown[] = [];
  let ok = 0, workerDied = 0, unexpected = 0, answered = 0, next = 0, kills = 0;

  const killRandomBusyWorker = async () => {
    const health = await sup.health();
    const busy = health.workers.filter((w) => w.state === "busy");
    const victim = busy[Math.floor(Math.random() * busy.length)];
    if (!victim) return;
    killed.add(victim.id);
    kills++;
    try {
      Deno.kill(victim.pid, "SIGKILL");
    } catch {
      // It exited by itself meanwhile.
    }
  };

  const lane = async () => {
    while (next < options.requests) {
      const i = next++;
      const id = `chaos-${i}`;
      const response = await sup.request("execute", { code: `${i} * 3` }, id);
      responses.set(id, (responses.get(id) ?? 0) + 1);
      const result = response.result as { status: string; result: string } | undefined;
      if (result?.status === "ok" && result.result === String(i * 3)) {
        ok++;
      } else if (
        response.error?.code === -32001 && killed.has(String(response.error.data?.worker_id))
      ) {
        workerDied++;
      } else {
        unexpected++;
        failures.push(response);
      }
      if (++answered % options.killEvery === 0) await killRandomBusyWorker();
    }
  };
  await Promise.all(Array.from({ length: options.inFlight }, lane));
  // Responses that arrive twice would be counted by the client after the run; give them a
  // moment to show up.
  await new Promise((r) => setTimeout(r, 200));
  const ids = sup.received.flatMap((m) => Array.isArray(m) ? m : [m])
    .map((m) => (m as { id?: unknown }).id)
    .filter((id): id is string => typeof id === "string" && id.startsWith("chaos-"));
  const counts = new Map<string, number>();
  for (const id of ids) counts.set(id, (counts.get(id) ?? 0) + 1);
  const summary: ChaosSummary = {
    requests: options.requests,
    ok,
    workerDied,
    unexpected,
    lost: options.requests - counts.size,
    duplicated: [...counts.values()].filter((n) => n > 1).length,
    kills,
    seconds: (performance.now() - started) / 1000,
  };
  return { summary, failures };
}
