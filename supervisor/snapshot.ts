/**
 * The memory snapshot that makes a worker start in about 0.2 s instead of 3 s. The
 * supervisor builds it once, in a separate process that may write only the snapshot
 * directory, and names it after everything it depends on: Pyodide's version, the Deno
 * version, and the sources that shape the interpreter it holds. A change to any of them
 * gives a new name, so a stale snapshot is never restored; old ones are removed.
 *
 * @module
 */

import { logger } from "../lib/logging.ts";
import { RUNTIME_SOURCES } from "../worker/runtime_sources.ts";
import { pyodideDirectory, SANDBOX_DENY_FLAGS, sandboxedRun } from "./worker_command.ts";

const PROJECT_ROOT = new URL("../", import.meta.url);
const path = (relative: string) => decodeURIComponent(new URL(relative, PROJECT_ROOT).pathname);

/** Where snapshots are kept. */
export const SNAPSHOT_DIRECTORY = path(".snapshots");

/** What the snapshot's content depends on, besides the Deno and Pyodide versions. */
const INPUTS = [
  "worker/interpreter.ts",
  "worker/runtime_sources.ts",
  ...RUNTIME_SOURCES.map(([, file]) => `worker/python/${file}`),
];

const log = logger("snapshot");

/** The snapshot's file name for the current Pyodide, Deno and sources. */
export async function snapshotPath(): Promise<string> {
  const pyodidePackage = JSON.parse(
    await Deno.readTextFile(`${pyodideDirectory()}/package.json`),
  ) as { version: string };
  const parts = [pyodidePackage.version, Deno.version.deno];
  for (const input of INPUTS) parts.push(await Deno.readTextFile(path(input)));
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(parts.join("\0")));
  return `${SNAPSHOT_DIRECTORY}/pyodide-${pyodidePackage.version}-${
    Array.from(new Uint8Array(digest).slice(0, 8), (b) => b.toString(16).padStart(2, "0")).join("")
  }.bin`;
}

/**
 * Returns the path of an up-to-date snapshot, building it if needed; undefined if it cannot
 * be built (workers then start from scratch, which is slower but works).
 */
export async function prepareSnapshot(timeoutMs: number): Promise<string | undefined> {
  try {
    const target = await snapshotPath();
    if (await exists(target)) return target;
    await buildSnapshot(target, timeoutMs);
    await removeOtherSnapshots(target);
    return target;
  } catch (error) {
    log.warning("no snapshot; workers start from scratch (slower): {error}", {
      error: String(error),
    });
    return undefined;
  }
}

async function exists(file: string): Promise<boolean> {
  try {
    await Deno.stat(file);
    return true;
  } catch {
    return false;
  }
}

async function buildSnapshot(target: string, timeoutMs: number): Promise<void> {
  const started = performance.now();
  log.info("building the interpreter snapshot (once per Pyodide version): {target}", { target });
  await Deno.mkdir(SNAPSHOT_DIRECTORY, { recursive: true });
  const output = await new Deno.Command(Deno.execPath(), {
    args: [
      ...sandboxedRun(),
      `--allow-read=${pyodideDirectory()},${path("worker")},${SNAPSHOT_DIRECTORY}`,
      `--allow-write=${SNAPSHOT_DIRECTORY}`,
      ...SANDBOX_DENY_FLAGS.filter((flag) => flag !== "--deny-write"),
      path("worker/snapshot_builder.ts"),
      target,
    ],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
    clearEnv: true,
    signal: AbortSignal.timeout(timeoutMs),
  }).output();
  if (!output.success) {
    throw new Error(`snapshot builder failed: ${new TextDecoder().decode(output.stderr).trim()}`);
  }
  log.info("snapshot built in {ms} ms", { ms: Math.round(performance.now() - started) });
}

async function removeOtherSnapshots(keep: string): Promise<void> {
  for await (const entry of Deno.readDir(SNAPSHOT_DIRECTORY)) {
    const file = `${SNAPSHOT_DIRECTORY}/${entry.name}`;
    // Older snapshots, and temporary files of builds that were interrupted.
    if (file !== keep && entry.name.startsWith("pyodide-")) {
      await Deno.remove(file).catch(() => {});
    }
  }
}
