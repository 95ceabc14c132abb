/**
 * Messages between a worker process's main thread (`worker_server.ts`) and the Web Worker
 * that runs Pyodide (`python_thread.ts`), and the layout of the shared control buffer.
 *
 * @module
 */

import type { ExecuteStatus, PythonError } from "../lib/protocol.ts";

/** Slots of the shared Int32Array that the main thread uses to stop Python. */
export const ControlSlot = {
  /** Pyodide's interrupt buffer: 2 (SIGINT) makes Python raise KeyboardInterrupt. */
  Interrupt: 0,
  /** Why the interrupt was sent, one of `InterruptReason`. */
  Reason: 1,
} as const;

export const CONTROL_SLOTS = 2;
export const SIGINT = 2;

export const InterruptReason = {
  None: 0,
  Timeout: 1,
  OutputLimit: 2,
  Cancelled: 3,
} as const;

export interface InitMessage {
  type: "init";
  control: SharedArrayBuffer;
  maxOutputBytes: number;
  /** Cap on the Wasm heap: growing past it fails, which Python sees as MemoryError. */
  maxHeapBytes: number;
  /** Memory snapshot to start from, if any. */
  snapshotPath?: string;
}

export interface RunMessage {
  type: "run";
  seq: number;
  code: string;
  stdin: string;
}

export type ToThread = InitMessage | RunMessage;

export interface ReadyMessage {
  type: "ready";
  pyodideVersion: string;
  pythonVersion: string;
  loadMs: number;
  heapBytes: number;
  /** Started from the memory snapshot. */
  restored: boolean;
}

/** A finished run: everything of the result but what the main thread adds. */
export interface RunOutcome {
  /** `cancelled` never reaches a client as a status: it becomes error -32003. */
  status: ExecuteStatus | "cancelled";
  stdout: string;
  stderr: string;
  truncated: boolean;
  result: string | null;
  error: PythonError | null;
}

export interface DoneMessage {
  type: "done";
  seq: number;
  outcome: RunOutcome;
  heapBytes: number;
}

/** The interpreter is broken (a Pyodide fatal error or a failed start). */
export interface FatalMessage {
  type: "fatal";
  message: string;
}

export type FromThread = ReadyMessage | DoneMessage | FatalMessage;
