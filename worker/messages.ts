/**
 * Messages between a worker process's main thread (`worker_server.ts`) and the Python thread
 * that runs Pyodide (`python_thread.ts`), and the layout of the shared control buffer.
 *
 * @module
 */

import type { InputFile } from "../lib/protocol.ts";
import type { Crash } from "./crash.ts";
import type { RunOutcome } from "./outcome.ts";
import type { RuntimeRequest } from "./runtime_contract.ts";
import type { Isolation } from "../lib/protocol.ts";
import type { Owner, ResetKind } from "./tenancy.ts";

/** Slots of the shared Int32Array that the main thread uses to stop Python. */
export const ControlSlot = {
  /** Pyodide's interrupt buffer: 2 (SIGINT) makes Python raise KeyboardInterrupt. */
  Interrupt: 0,
  /** Why the interrupt was sent, one of `InterruptReason`. */
  Reason: 1,
  /** Where the thread is in a run, one of `RunPhase`; changed with compare-and-swap. */
  Phase: 2,
  /** Set to 1 when the main thread has terminated this Python thread (see `PythonHost`). */
  Terminated: 3,
} as const;

/**
 * The thread's phase. Interrupts reach Python only in `Running`: outside it, the thread runs
 * its own code (package loading, a finishing run's report and reset, or session calls) that
 * must not be cut.
 */
export const RunPhase = {
  /** No request code runs: before a run starts, or while the runtime finishes one. */
  Closed: 0,
  /** The request's code runs. */
  Running: 1,
  /** A stop arrived before the thread took up the run: it answers without running the code. */
  StopBeforeStart: 2,
} as const;

export const CONTROL_SLOTS = 4;
export const SIGINT = 2;

export const InterruptReason = {
  None: 0,
  Timeout: 1,
  OutputLimit: 2,
  Cancelled: 3,
  /** The worker process's resident memory passed its ceiling while the run went on. */
  MemoryLimit: 4,
} as const;

export interface InitMessage {
  type: "init";
  control: SharedArrayBuffer;
  maxOutputBytes: number;
  /** Files created by a run larger than this come back without content. */
  maxFileBytes: number;
  /** Most bytes of file contents one answer returns; the files past it come back without. */
  maxReturnedFileBytes: number;
  /** Cap on the Wasm heap: growing past it fails, which Python sees as MemoryError. */
  maxHeapBytes: number;
  /** Bytes of files a request may hold in the file system beyond the pristine interpreter's. */
  maxFsBytes: number;
  /** Memory snapshot to start from, if any. */
  snapshotPath?: string;
  /** Pyodide lock file that names the loadable packages (a local path or a URL). */
  lockFileUrl?: string;
  /** Network mode: Python gets `fetch` (hosts still limited by --allow-net). */
  allowNetwork: boolean;
  /** Testing only: act on failpoints (worker/failpoints.ts). */
  failpoints: boolean;
  /** What is put back between requests (`--isolation`). */
  isolation: Isolation;
  /** Bytes of session memory one export may carry: the line to the supervisor is capped. */
  maxExportBytes: number;
  /** Bytes parked sessions may hold before the least recently used is dropped. */
  maxParkedBytes: number;
}

export interface RunMessage {
  type: "run";
  seq: number;
  /** The request for the runtime's `run` (code, stdin, session). */
  request: RuntimeRequest;
  /** Whose state the request runs in. */
  owner: Owner;
  /** Files to write into the run directory first. */
  files: InputFile[];
  /** Packages to have loaded before the code runs. */
  packages: string[];
  /** Post `output` messages as the code writes. */
  stream: boolean;
}

/**
 * Calls one of the runtime's string-to-string functions (sessions), or renews the interpreter
 * from its memory image (`renew`, which returns the milliseconds it took).
 */
export interface CallMessage {
  type: "call";
  seq: number;
  fn: "drop_session" | "export_sessions" | "import_sessions" | "renew";
  arg?: string;
}

/** Asks a run that awaits in top-level `await` to stop (an interrupt cannot reach it). */
export interface CancelAwaitMessage {
  type: "cancel_await";
}

export type ToThread = InitMessage | RunMessage | CallMessage | CancelAwaitMessage;

export interface ReadyMessage {
  type: "ready";
  pyodideVersion: string;
  pythonVersion: string;
  loadMs: number;
  heapBytes: number;
  /** Bytes of files held beyond the pristine interpreter's (see fs_quota.ts). */
  fsBytes: number;
  /** Started from the memory snapshot. */
  restored: boolean;
}

export interface DoneMessage {
  type: "done";
  seq: number;
  outcome: RunOutcome;
  heapBytes: number;
  /** A request changed something the isolation reset cannot undo. */
  tainted: boolean;
}

/**
 * A run's after-work is done (its reset, a park or a resume before it): the thread can take
 * the next run at once.
 */
export interface SettledMessage {
  type: "settled";
  seq: number;
  reset: ResetKind;
  resetMs: number;
  /** Time to put the base image back before the run, when the owner changed. */
  restoreMs?: number;
  parkMs?: number;
  resumeMs?: number;
  /** Bytes of the session image resumed. */
  resumedBytes?: number;
  /** Parked sessions, and their bytes, after the run. */
  parkedBytes: number;
  /** Bytes of files held beyond the pristine interpreter's, once the after-work is done. */
  fsBytes: number;
  /** Sessions dropped (least recently used past the limit, or a failed reset), and why. */
  lost: { sessionId: string; reason: string }[];
  /** The function table grew past what a worker should keep: it asks to be replaced. */
  overgrown: boolean;
  /** The interpreter crashed or exited (crash.ts), and was put back: how it ended. */
  recovered?: Crash["kind"];
}

export interface ReturnedMessage {
  type: "returned";
  seq: number;
  value: string;
  /** Set when the Python function raised. */
  error?: string;
  /**
   * Sessions the call dropped (the renewal's park past the limit, a crash between runs), and
   * why: reported before the call's answer, since the worker may leave before another run.
   */
  lost?: { sessionId: string; reason: string }[];
}

/** A chunk of output, for streaming. */
export interface OutputMessage {
  type: "output";
  seq: number;
  stream: "stdout" | "stderr";
  text: string;
}

/**
 * The isolation reset after a run failed: the request broke something the reset relies on.
 * The run was answered; the thread takes no more runs, and is replaced by a fresh one.
 */
export interface BrokenMessage {
  type: "broken";
  message: string;
}

/** The interpreter is broken (a Pyodide fatal error or a failed start). */
export interface FatalMessage {
  type: "fatal";
  message: string;
}

export type FromThread =
  | ReadyMessage
  | DoneMessage
  | SettledMessage
  | ReturnedMessage
  | OutputMessage
  | BrokenMessage
  | FatalMessage;
