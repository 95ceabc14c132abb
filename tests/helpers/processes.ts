/** Test helpers that wait: for processes to exit, for a condition to hold. */

/** True while a process with this pid runs (a zombie, exited but not yet reaped, does not). */
export function isAlive(pid: number): boolean {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    // The state follows the parenthesized command name.
    return stat.slice(stat.lastIndexOf(")") + 2)[0] !== "Z";
  } catch {
    return false;
  }
}

/** Waits until none of `pids` is alive, or throws after `timeoutMs`. */
export async function waitForExit(pids: number[], timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (pids.some(isAlive)) {
    if (Date.now() > deadline) {
      throw new Error(`still alive: ${pids.filter(isAlive).join(", ")}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Polls `probe` every 100 ms until it returns a value, and returns it; throws after `timeoutMs`. */
export async function waitFor<T>(
  what: string,
  probe: () => Promise<T | undefined>,
  timeoutMs = 60_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Polls `probe` every 100 ms until it holds, or throws after `timeoutMs`. */
export async function waitUntil(
  what: string,
  probe: () => Promise<boolean>,
  timeoutMs = 60_000,
): Promise<void> {
  await waitFor(what, async () => (await probe()) || undefined, timeoutMs);
}

/**
 * The text of `/proc/<pid>/status`, read through `cat`: Deno lets a program read another
 * process's /proc files only with --allow-all.
 */
export function procStatus(pid: number): string {
  const { stdout } = new Deno.Command("cat", { args: [`/proc/${pid}/status`] }).outputSync();
  return new TextDecoder().decode(stdout);
}

/** A memory field of a `/proc/<pid>/status` text (VmRSS, VmHWM, RssAnon), in bytes; NaN if none. */
export function statusBytes(status: string, field: string): number {
  const kib = new RegExp(`^${field}:\\s+(\\d+) kB$`, "m").exec(status);
  return kib ? Number(kib[1]) * 1024 : NaN;
}

/** The most resident memory the process `pid` has had (its `VmHWM`), in bytes. */
// deno-lint-ignore require-await -- a promise, as before: a sampler chains `.catch` on it
export async function peakRssBytes(pid: number): Promise<number> {
  const bytes = statusBytes(procStatus(pid), "VmHWM");
  if (Number.isNaN(bytes)) throw new Error(`no VmHWM for process ${pid}`);
  return bytes;
}
