/**
 * The contract between the supervisor and a worker process (`worker_server.ts`): the methods
 * the supervisor calls with their params and results, the notifications the worker sends, the
 * worker's command-line flags with their defaults, and the line limit between the two. Both
 * sides import this file; neither spells a method, a notification or a flag anywhere else.
 *
 * Loaded before the worker's interpreter starts, so it imports no package (`node:util` is
 * built in) and nothing heavier than lib/protocol.ts.
 *
 * @module
 */

import { parseArgs } from "node:util";
import type { LogFormat, LogLevelName } from "./logging.ts";
import {
  type ExecuteParams,
  type ExecuteResult,
  type Isolation,
  ISOLATIONS,
  type JsonRpcId,
  type NotificationMessage,
  notificationMessage,
  type WorkerOwnStats,
} from "./protocol.ts";

// Methods: the supervisor calls, the worker answers.

/**
 * One session as `export_sessions` hands it over, for `import_sessions` on the worker that
 * replaces this one: opaque but for the names it could not keep (pickled sessions only).
 */
export type ExportedSession = { dropped?: string[]; [field: string]: unknown };

/** Every method a worker serves: its params and its result. */
export type WorkerMethods = {
  /** Runs Python; the supervisor always sends `timeout_ms` (the time its client has left). */
  execute: { params: ExecuteParams; result: ExecuteResult };
  /** Stops the run in progress, if any. */
  cancel: { params: Record<string, never>; result: { cancelled: boolean } };
  ping: {
    params: Record<string, never>;
    result: { worker_id: string; busy: boolean; uptime_ms: number };
  };
  stats: { params: Record<string, never>; result: WorkerOwnStats };
  /** Exits once the answer is written. */
  shutdown: { params: Record<string, never>; result: { worker_id: string; stopping: true } };
  drop_session: { params: { session_id: string }; result: { dropped: boolean } };
  /**
   * Puts the interpreter back to its memory image at the request limit, keeping the sessions
   * (`restore_ms`: what it took). A worker of `--isolation none` has no image: an RpcError.
   */
  renew: { params: Record<string, never>; result: { restore_ms: number } };
  export_sessions: {
    params: Record<string, never>;
    result: { sessions: Record<string, ExportedSession> };
  };
  /** `failed`: the sessions that could not be restored, with why. */
  import_sessions: {
    params: { sessions: Record<string, ExportedSession> };
    result: { failed: Record<string, string> };
  };
};

export type WorkerMethod = keyof WorkerMethods;
export type WorkerParams<M extends WorkerMethod> = WorkerMethods[M]["params"];
export type WorkerResult<M extends WorkerMethod> = WorkerMethods[M]["result"];

// Notifications: the worker sends, the supervisor listens.

/** A worker's memory, as it reports it when ready and after each request's after-work. */
export type WorkerMemory = {
  /** The Wasm heap. */
  heap_bytes: number;
  /** The whole process's resident memory. */
  rss_bytes: number;
  /** Files held in the in-memory file system beyond the pristine interpreter's. */
  fs_bytes: number;
};

/** What a worker announces in its `ready` notification. */
export type ReadyInfo = WorkerMemory & {
  worker_id: string;
  pyodide_version: string;
  python_version: string;
  load_ms: number;
  /** Started from the memory snapshot. */
  restored_from_snapshot: boolean;
};

/**
 * What a worker reports once it is done with request `id`'s after-work (its reset, or a park
 * or resume before it): what that cost.
 */
export type IdleParams = WorkerMemory & {
  id: JsonRpcId;
  reset: "image" | "python" | "none";
  reset_ms: number;
  /** The base image put back before the run, when the owner changed. */
  restore_ms?: number;
  park_ms?: number;
  resume_ms?: number;
  resumed_bytes?: number;
  parked_bytes: number;
  /** The interpreter crashed or exited, and was put back in place: how it ended. */
  recovered?: "exited" | "crashed";
};

/**
 * Why a worker asks to be replaced (the supervisor starts the replacement first):
 * - `heap_grown`: Wasm memory never shrinks, so a heap grown past the limit stays;
 * - `interpreter_restart`: a terminated Python thread stuck in Wasm may keep running (and
 *   burning a core) however it was terminated, so only the process ending stops it for sure;
 * - `tainted`: a request changed something the isolation reset cannot undo (a large file of
 *   the virtual file system, such as the stdlib zip): no other request may run here;
 * - `table_grown`: requests left so many slots in the Wasm function table (libffi closures)
 *   that the image keeps them (see worker/image/wasm_state.ts);
 * - `recoveries`: the interpreter crashed more than --max-recoveries-per-minute times in a
 *   minute, each put back in place (worker/crash.ts): a fresh process costs no more then;
 * - `rss_grown`: the process's resident memory passed `--max-rss-mb` (memory outside the Wasm
 *   heap, such as file contents, that the allocators keep once freed).
 */
export type RecycleReason =
  | "heap_grown"
  | "interpreter_restart"
  | "tainted"
  | "table_grown"
  | "recoveries"
  | "rss_grown";

/** The `recycle` notification: why, and the memory figures against their limits. */
export type RecycleParams = {
  reason: RecycleReason;
  heap_bytes: number;
  heap_limit_bytes: number;
  rss_bytes: number;
  rss_limit_bytes: number;
};

/** Sessions the worker dropped (past --max-parked-mb, or a failed reset), and why. */
export type SessionsLostParams = { session_ids: string[]; reason: string };

/** A chunk of a streaming request's output, sent as it is written. */
export type OutputParams = { id: JsonRpcId; stream: "stdout" | "stderr"; text: string };

/** Every notification a worker sends, by method name: its params. */
export type WorkerNotifications = {
  ready: ReadyInfo;
  idle: IdleParams;
  recycle: RecycleParams;
  sessions_lost: SessionsLostParams;
  output: OutputParams;
};

export type WorkerNotificationMethod = keyof WorkerNotifications;

/** A worker's notification as the supervisor reads it: the method tells the params' type. */
export type WorkerNotice = {
  [M in WorkerNotificationMethod]: { method: M; params: WorkerNotifications[M] };
}[WorkerNotificationMethod];

/**
 * A worker's notification, as written on its stdout.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { workerNotification } from "./worker_protocol.ts";
 * const message = workerNotification("sessions_lost", { session_ids: ["s1"], reason: "parked" });
 * assert.deepEqual(message, {
 *   jsonrpc: "2.0",
 *   method: "sessions_lost",
 *   params: { session_ids: ["s1"], reason: "parked" },
 * });
 * ```
 */
export function workerNotification<M extends WorkerNotificationMethod>(
  method: M,
  params: WorkerNotifications[M],
): NotificationMessage {
  return notificationMessage(method, params);
}

// The line limit.

/**
 * The line limit between supervisor and workers, both ways: large enough for big session
 * states and files (a 16 MiB client line grows when results add base64), never below the
 * client's.
 */
export function internalMaxLineBytes({ maxLineBytes }: { maxLineBytes: number }): number {
  return Math.max(maxLineBytes * 4, 256 << 20);
}

// Flags: the worker's command line.

/** Everything a worker is told on its command line. */
export type WorkerFlags = {
  /** The name it logs and answers with. */
  workerId: string;
  /** Memory snapshot to start (and restart) the interpreter from. */
  snapshot: string | undefined;
  /** Pyodide lock file naming the loadable packages. */
  lockFileUrl: string | undefined;
  /** Network mode: Python gets `fetch`. */
  allowNetwork: boolean;
  /** Largest output file returned with its content. */
  maxFileBytes: number;
  /** Cap on stdout and on stderr of one run. */
  maxOutputBytes: number;
  /** Cap on the Wasm heap. */
  maxHeapMb: number;
  /** A heap grown past this asks for a replacement (`recycle`). */
  recycleHeapMb: number;
  /** Ceiling on the process's resident memory. */
  maxRssMb: number;
  /** Bytes of files one request may hold in the file system. */
  maxFsMb: number;
  /** Longest line read, and written: see `internalMaxLineBytes`. */
  maxLineBytes: number;
  /**
   * The client's line limit, which an `execute` answer must fit when the supervisor passes it
   * on (lib/rpc_server.ts): the run's returned files get 3/8 of it.
   */
  maxAnswerBytes: number;
  isolation: Isolation;
  /** Bytes of parked session images the worker may hold. */
  maxParkedMb: number;
  /** Crashes recovered in place within a minute before the worker asks for a replacement. */
  maxRecoveriesPerMinute: number;
  logLevel: LogLevelName;
  logFormat: LogFormat;
  /** Testing only: lets tests make a real worker misbehave (worker/failpoints.ts). */
  failpoints: boolean;
  /** How long to keep re-interrupting a run before the interpreter is restarted. */
  interruptGraceMs: number;
  /** The timeout of an `execute` without `timeout_ms` (the supervisor always sends one). */
  defaultTimeoutMs: number;
};

/** A flag's name, its default, and how its value is written and read back. */
interface FlagSpec<V> {
  /** Without the leading `--`. */
  name: string;
  default: V;
  /** How `node:util` parseArgs takes it. */
  type: "string" | "boolean";
  /** The words of argv for a value; none leaves the flag out. */
  write(value: V): string[];
  /** The value of what parseArgs read; throws WorkerFlagError for a bad one. */
  read(raw: string | boolean): V;
}

/** A flag with a value that does not parse: the worker cannot start. */
export class WorkerFlagError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "WorkerFlagError";
  }
}

/** A flag written `--name value`; `read` checks the value (WorkerFlagError for a bad one). */
function valued<V>(name: string, defaultValue: V, read: (raw: string) => V): FlagSpec<V> {
  return {
    name,
    default: defaultValue,
    type: "string",
    write: (value) => [`--${name}`, String(value)],
    read: (raw) => read(String(raw)),
  };
}

/** An integer of at least `min`. */
function integer(name: string, defaultValue: number, min: number): FlagSpec<number> {
  return valued(name, defaultValue, (raw) => {
    const value = raw.trim() !== "" ? Number(raw) : NaN;
    if (!Number.isInteger(value) || value < min) {
      throw new WorkerFlagError(`--${name}: ${JSON.stringify(raw)} is not an integer >= ${min}`);
    }
    return value;
  });
}

function text(name: string, defaultValue: string): FlagSpec<string> {
  return valued(name, defaultValue, String);
}

function optionalText(name: string): FlagSpec<string | undefined> {
  return {
    name,
    default: undefined,
    type: "string",
    write: (value) => value === undefined ? [] : [`--${name}`, value],
    read: String,
  };
}

/** A flag without a value: present means true. */
function toggle(name: string): FlagSpec<boolean> {
  return {
    name,
    default: false,
    type: "boolean",
    write: (value) => value ? [`--${name}`] : [],
    read: Boolean,
  };
}

function choice<V extends string>(
  name: string,
  choices: readonly V[],
  defaultValue: V,
): FlagSpec<V> {
  return valued(name, defaultValue, (raw) => {
    const value = choices.find((c) => c === raw);
    if (value === undefined) {
      throw new WorkerFlagError(
        `--${name}: ${JSON.stringify(raw)} is not one of ${choices.join(", ")}`,
      );
    }
    return value;
  });
}

type FlagSpecs<T> = { readonly [K in keyof T]: FlagSpec<T[K]> };

/**
 * Every flag, in the order the command line lists them. The defaults are the pool's too
 * (supervisor/config.ts takes them from here); they matter when a worker is started by hand.
 */
const FLAGS: FlagSpecs<WorkerFlags> = {
  snapshot: optionalText("snapshot"),
  lockFileUrl: optionalText("lock-file-url"),
  allowNetwork: toggle("allow-network"),
  maxFileBytes: integer("max-file-bytes", 10 << 20, 0),
  maxOutputBytes: integer("max-output-bytes", 1 << 20, 1),
  maxHeapMb: integer("max-heap-mb", 1024, 1),
  recycleHeapMb: integer("recycle-heap-mb", 512, 1),
  maxRssMb: integer("max-rss-mb", 2048, 1),
  maxFsMb: integer("max-fs-mb", 512, 1),
  maxLineBytes: integer("max-line-bytes", 16 << 20, 1),
  maxAnswerBytes: integer("max-answer-bytes", 16 << 20, 1),
  isolation: choice("isolation", ISOLATIONS, "request"),
  maxParkedMb: integer("max-parked-mb", 256, 1),
  maxRecoveriesPerMinute: integer("max-recoveries-per-minute", 600, 1),
  logLevel: choice("log-level", ["debug", "info", "warning", "error"], "info"),
  logFormat: choice("log-format", ["text", "json"], "text"),
  failpoints: toggle("failpoints"),
  interruptGraceMs: integer("interrupt-grace-ms", 500, 0),
  defaultTimeoutMs: integer("default-timeout-ms", 30_000, 1),
  workerId: text("worker-id", "w0"),
};

function defaultsOf<T>(specs: FlagSpecs<T>): T {
  const values: Partial<T> = {};
  for (const key in specs) values[key] = specs[key].default;
  return values as T;
}

/** What a worker does when its command line does not say. */
export const WORKER_DEFAULTS: Readonly<WorkerFlags> = Object.freeze(defaultsOf(FLAGS));

function argvOf<T>(specs: FlagSpecs<T>, values: Partial<T>): string[] {
  const argv: string[] = [];
  for (const key in specs) {
    const value = values[key];
    if (value !== undefined) argv.push(...specs[key].write(value));
  }
  return argv;
}

/**
 * The command-line words for `flags`; those left out take the worker's defaults.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseWorkerFlags, workerArgv } from "./worker_protocol.ts";
 * const argv = workerArgv({ maxHeapMb: 256, allowNetwork: true });
 * assert.deepEqual(argv, ["--allow-network", "--max-heap-mb", "256"]);
 * assert.equal(parseWorkerFlags(argv).maxHeapMb, 256);
 * assert.throws(() => parseWorkerFlags(["--max-heap-mb", "lots"]), /not an integer/);
 * ```
 */
export function workerArgv(flags: Partial<WorkerFlags>): string[] {
  return argvOf(FLAGS, flags);
}

function parseWith<T>(specs: FlagSpecs<T>, argv: string[]): T {
  const options: Record<string, { type: "string" | "boolean" }> = {};
  for (const key in specs) options[specs[key].name] = { type: specs[key].type };
  let raw: Record<string, string | boolean | undefined>;
  try {
    raw = parseArgs({ args: argv, options, strict: true, allowPositionals: false }).values;
  } catch (error) {
    throw new WorkerFlagError((error as Error).message);
  }
  const values = defaultsOf(specs);
  for (const key in specs) {
    const given = raw[specs[key].name];
    if (given !== undefined) values[key] = specs[key].read(given);
  }
  return values;
}

/**
 * Reads a worker's command line: every flag checked once, here. Throws WorkerFlagError, which
 * names the flag, for an unknown flag or a bad value.
 */
export function parseWorkerFlags(argv: string[]): WorkerFlags {
  return parseWith(FLAGS, argv);
}
