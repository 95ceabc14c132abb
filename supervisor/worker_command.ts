/**
 * The command line that starts one worker process, with its sandbox: the narrowest Deno
 * permissions that let Pyodide load. Pyodide is not a security boundary; these flags are.
 *
 * @module
 */

import type { Config } from "./config.ts";
import { internalMaxLineBytes, workerArgv } from "../lib/worker_protocol.ts";

const PROJECT_ROOT = new URL("../", import.meta.url);
const path = (relative: string) => decodeURIComponent(new URL(relative, PROJECT_ROOT).pathname);

/** Everything a worker (and the snapshot builder) may not do. */
export const SANDBOX_DENY_FLAGS = [
  "--deny-write",
  "--deny-net",
  "--deny-run",
  "--deny-env",
  "--deny-ffi",
  "--deny-sys",
  "--deny-import",
];

/**
 * `deno run` for the sandboxed processes (workers and the snapshot builder), before their
 * permission flags: never ask on a terminal, never fetch code (everything is installed
 * beforehand), and never evaluate a string as code.
 *
 * V8's `--disallow-code-generation-from-strings` makes `eval` and every `Function`
 * constructor throw, by any path: Wasm code can call Emscripten's imports, and some of them
 * evaluate strings (worker/interpreter.ts replaces those, since the error is fatal to Pyodide).
 * A small young generation saves about 17 MB of resident memory per worker, at no cost in
 * latency measured (docs/performance.md).
 */
export function sandboxedRun(): string[] {
  return [
    "run",
    "--no-prompt",
    "--cached-only",
    "--no-remote",
    "--config",
    path("deno.json"),
    "--v8-flags=--max-semi-space-size=1,--disallow-code-generation-from-strings",
  ];
}

export interface WorkerCommand {
  executable: string;
  /** Arguments before the per-worker ones (`--worker-id`, appended by worker_process.ts). */
  args: string[];
  /** The only directories the worker may read. */
  readable: string[];
}

/** Directory of the installed `pyodide` npm package (its .wasm, stdlib zip, lock file). */
export function pyodideDirectory(): string {
  const entry = new URL(import.meta.resolve("pyodide"));
  if (entry.protocol !== "file:") {
    throw new Error(`pyodide resolved to ${entry.href}; expected a local file (nodeModulesDir)`);
  }
  return decodeURIComponent(new URL("./", entry).pathname).replace(/\/$/, "");
}

/**
 * Builds the worker command for a configuration.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { buildWorkerCommand } from "./worker_command.ts";
 * import { loadConfig } from "./config.ts";
 * const loaded = loadConfig([], {});
 * assert.ok("config" in loaded);
 * assert.ok(buildWorkerCommand(loaded.config).args.includes("--deny-net"));
 * ```
 */
export function buildWorkerCommand(
  config: Config,
  snapshot?: string,
  lockFileUrl?: string,
): WorkerCommand {
  // worker/ holds the Python thread's modules and the Python runtime, which load at run time
  // and so need read access; nothing else of the project is readable.
  const readable = [
    pyodideDirectory(),
    path("worker"),
    ...(snapshot ? [snapshot] : []),
    ...(config.packagesDir ? [config.packagesDir] : []),
  ];
  // Hosts a worker may reach: the package index when one is configured, and the hosts of the
  // opt-in network mode. Nothing else, and nothing at all by default.
  const hosts = [
    ...(config.packageIndexUrl ? [new URL(config.packageIndexUrl).host] : []),
    ...config.workerAllowNet,
  ];
  const deny = hosts.length > 0
    ? SANDBOX_DENY_FLAGS.filter((f) => f !== "--deny-net")
    : SANDBOX_DENY_FLAGS;
  return {
    executable: Deno.execPath(),
    readable,
    args: [
      ...sandboxedRun(),
      "--allow-read=" + readable.join(","),
      ...(hosts.length > 0 ? [`--allow-net=${hosts.join(",")}`] : []),
      ...deny,
      path("worker_server.ts"),
      ...workerArgv({
        snapshot,
        lockFileUrl,
        // Network mode also hands Python `fetch` (worker/sandbox.ts).
        allowNetwork: config.workerAllowNet.length > 0,
        maxFileBytes: config.maxFileBytes,
        maxOutputBytes: config.maxOutputBytes,
        maxHeapMb: config.workerMaxMemoryMb,
        recycleHeapMb: config.workerRecycleHeapMb,
        maxRssMb: config.workerMaxRssMb,
        maxFsMb: config.maxFsMb,
        maxLineBytes: internalMaxLineBytes(config),
        maxAnswerBytes: config.maxLineBytes,
        isolation: config.isolation,
        maxParkedMb: config.maxParkedMb,
        maxRecoveriesPerMinute: config.maxRecoveriesPerMinute,
        logLevel: config.logLevel,
        logFormat: config.logFormat,
        // Testing only: lets tests make a real worker misbehave (worker/failpoints.ts).
        failpoints: Deno.env.get("PYODIDE_POOL_FAILPOINTS") === "1",
      }),
    ],
  };
}
