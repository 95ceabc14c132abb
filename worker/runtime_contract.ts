/**
 * The boundary between the Python thread (`python_thread.ts`) and the Python runtime
 * (`python/runtime.py`): the functions the runtime module offers, the request its `run` reads,
 * and the report it writes. JSON crosses this boundary (one cheap crossing instead of a proxy
 * per field); it is made and read here only, and the report is checked once, as it is read.
 *
 * @module
 */

import type { PyProxy } from "pyodide/ffi";
import type { Figure, PythonError } from "../lib/protocol.ts";
import type { CallMessage } from "./messages.ts";

/** What `run` reads: one request's code and the state it runs in. */
export interface RuntimeRequest {
  code: string;
  /** What the code reads from `sys.stdin`. */
  stdin?: string;
  /** The session whose namespace the code runs in (none: a fresh namespace). */
  session_id?: string;
  /** A state that `return_session` gave back, to run in (client-side sessions). */
  session_bytes?: string;
  /** Report the namespace's state afterwards (`session_bytes`, `session_dropped`). */
  return_session?: boolean;
}

/** What `run` reports, as JSON: how the code ended. */
export interface RuntimeReport {
  /** `exited`: the code raised SystemExit (its status is `exit_code`). */
  status: "ok" | "error" | "exited";
  /** `repr()` of the last expression, or null. */
  result: string | null;
  error: PythonError | null;
  /** matplotlib figures left open; absent when the report itself failed. */
  figures?: Figure[];
  exit_code?: number;
  session_bytes?: string;
  session_dropped?: string[];
}

/**
 * The report in `json`, or undefined if it is not one `run` writes. The request may have
 * patched what the runtime reports with (say `json.dumps`; the reset undoes it after the
 * report): what comes back is checked field by field before anything trusts it.
 */
export function parseRuntimeReport(json: string): RuntimeReport | undefined {
  let report: unknown;
  try {
    report = JSON.parse(json);
  } catch {
    return undefined;
  }
  if (!isRuntimeReport(report)) return undefined;
  // Only the fields of the contract go on, in the order runtime.py writes them.
  const { status, result, error, figures, exit_code, session_bytes, session_dropped } = report;
  return {
    status,
    result,
    error: error && { type: error.type, message: error.message, traceback: error.traceback },
    ...(figures === undefined
      ? {}
      : { figures: figures.map(({ format, data_b64 }) => ({ format, data_b64 })) }),
    ...(exit_code === undefined ? {} : { exit_code }),
    ...(session_bytes === undefined ? {} : { session_bytes }),
    ...(session_dropped === undefined ? {} : { session_dropped }),
  };
}

function isRuntimeReport(value: unknown): value is RuntimeReport {
  if (!isRecord(value)) return false;
  const { status, result, error, figures, exit_code, session_bytes, session_dropped } = value;
  return (status === "ok" || status === "error" || status === "exited") &&
    (result === null || typeof result === "string") &&
    (error === null || isPythonError(error)) &&
    (figures === undefined || Array.isArray(figures) && figures.every(isFigure)) &&
    (exit_code === undefined || Number.isInteger(exit_code)) &&
    (session_bytes === undefined || typeof session_bytes === "string") &&
    (session_dropped === undefined ||
      Array.isArray(session_dropped) && session_dropped.every((name) => typeof name === "string"));
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function isPythonError(value: unknown): value is PythonError {
  return isRecord(value) && typeof value.type === "string" &&
    typeof value.message === "string" && typeof value.traceback === "string";
}

function isFigure(value: unknown): value is Figure {
  return isRecord(value) && value.format === "png" && typeof value.data_b64 === "string";
}

/** A function of the runtime module, held by a proxy of its own. */
type RuntimeFunction<F> = PyProxy & F;

/** The runtime module's functions, as the thread calls them. */
export interface Runtime {
  /**
   * Called once per interpreter start (see `install` in runtime.py): `waitMs` blocks on the
   * interrupt slot, `closeRun` ends the part of a run that interrupts can cut,
   * `interruptsInCallbacks` moves an async run's callback depth, `maxReprChars` caps a
   * result's texts, `reseed` reseeds `random`.
   */
  install: RuntimeFunction<
    (
      waitMs: (ms: number) => void,
      closeRun: () => void,
      interruptsInCallbacks: (delta: number) => void,
      maxReprChars: number,
      reseed: boolean,
    ) => void
  >;
  /** Takes the isolation baseline, once the worker is ready for requests. */
  seal: RuntimeFunction<() => void>;
  /**
   * Runs one request: its report as JSON (read it with `parseRuntimeReport`), or, for code
   * that uses top-level await, a task that resolves to it. Unknown all the same: the code
   * may have replaced what the runtime reports with. `reseed`: the run starts from a memory
   * image just put back.
   */
  run(request: RuntimeRequest, reseed: boolean): unknown;
  /** Cancels the task of a run that awaits. */
  cancelCurrent: RuntimeFunction<() => void>;
  /** The Python-level reset of what the last request changed, files aside. */
  reset: RuntimeFunction<() => void>;
  /** Packages just installed are part of the baseline. */
  acceptInstalled: RuntimeFunction<() => void>;
  /** The folders and files whose changes the file reset undoes (fs_watch.ts watches them). */
  watchedPaths(): string[];
  /** Undoes the changes to `changed`, watched paths; false if one cannot be undone. */
  restoreFiles(changed: string[]): boolean;
  /** The session functions (`--isolation none`): a string, or a value `String` makes one. */
  sessions: Record<CallMessage["fn"], RuntimeFunction<(arg?: string) => unknown>>;
}

/** The runtime module's functions, copied: attribute proxies are borrowed from the module's. */
export function bindRuntime(module: PyProxy): Runtime {
  const install = module.install.copy() as Runtime["install"];
  const run = module.run.copy() as RuntimeFunction<(request: string, reseed: boolean) => unknown>;
  const cancelCurrent = module.cancel_current.copy() as Runtime["cancelCurrent"];
  const seal = module.seal.copy() as Runtime["seal"];
  const reset = module.reset.copy() as Runtime["reset"];
  const acceptInstalled = module.accept_installed.copy() as Runtime["acceptInstalled"];
  const watchedPaths = module.watched_paths.copy() as RuntimeFunction<() => string>;
  const restoreFiles = module.restore_files.copy() as RuntimeFunction<(changed: string) => boolean>;
  const sessions = {
    drop_session: module.drop_session.copy(),
    export_sessions: module.export_sessions.copy(),
    import_sessions: module.import_sessions.copy(),
  } as Runtime["sessions"];
  return {
    install,
    seal,
    run: (request, reseed) => run(JSON.stringify(request), reseed),
    cancelCurrent,
    reset,
    acceptInstalled,
    watchedPaths: () => JSON.parse(watchedPaths()),
    restoreFiles: (changed) => restoreFiles(JSON.stringify(changed)),
    sessions,
  };
}
