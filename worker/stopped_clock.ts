/**
 * A wall clock that stands still while the interpreter's image is made, so that every worker
 * booted alike makes the same image, byte for byte, and a session parked on one can resume on
 * another (`image/interpreter_image.ts`, `fingerprint`).
 *
 * Without it, two workers' images differed in the times that the file system stamps on what it
 * creates (`Date.now()`), which Python then caches (the import system keeps the directories'
 * mtimes), and in whatever `time.time()` returns meanwhile.
 *
 * @module
 */

/** The time the clock shows while stopped: 2000-01-01, a time no file of a request has. */
const STOPPED_AT = Date.UTC(2000, 0, 1);

let stopped = 0;

/**
 * Makes `Date.now` stoppable (Emscripten's file system and Python's wall clock read it). Call
 * once, before Pyodide loads and before the intrinsics are frozen.
 */
export function installStoppableClock(): void {
  const now = Date.now;
  Date.now = () => stopped > 0 ? STOPPED_AT : now();
}

/** Runs `work` with the wall clock stopped. */
export async function withClockStopped<T>(work: () => T | Promise<T>): Promise<T> {
  stopped++;
  try {
    return await work();
  } finally {
    stopped--;
  }
}
