/**
 * The run phase as the Python thread keeps it: its side of the shared control buffer's
 * Interrupt, Reason, Phase and Terminated slots (their layout is in messages.ts; the main
 * thread's side is in python_host.ts).
 *
 * Python takes interrupts only while a request's code runs (`open` to `close`): the phase
 * check in the main thread cannot stop a signal it sent a moment before the run closed, and
 * one that landed in the report or the reset would break the worker.
 *
 * @module
 */

import { ControlSlot, InterruptReason, RunPhase, SIGINT } from "./messages.ts";

/** Hands Pyodide the buffer it takes interrupts from, or takes it back (`undefined`). */
export type SetInterruptBuffer = (buffer: Int32Array | undefined) => void;

export class ThreadRunPhase {
  readonly #control: Int32Array;
  /** The interrupt slot, which Pyodide is handed while the code runs. */
  readonly #interrupt: Int32Array;
  /** An async run's callbacks running, one inside the other (see `inCallbacks`). */
  #callbackDepth = 0;
  /**
   * Why the run was stopped (one of InterruptReason), as it stood when the run closed: a stop
   * that comes later finds the code done, and does not turn its result into a timeout.
   */
  #closedFor: number = InterruptReason.None;

  constructor(control: SharedArrayBuffer, private readonly setInterruptBuffer: SetInterruptBuffer) {
    this.#control = new Int32Array(control);
    this.#interrupt = new Int32Array(control, ControlSlot.Interrupt * 4, 1);
  }

  /** Why the last run was stopped, one of `InterruptReason` (`None` if it was not). */
  get closedFor(): number {
    return this.#closedFor;
  }

  /** Stops the code for `reason` (the output cap), if it runs. */
  stopFor(reason: number): void {
    if (Atomics.load(this.#control, ControlSlot.Phase) !== RunPhase.Running) return;
    Atomics.store(this.#control, ControlSlot.Reason, reason);
    Atomics.store(this.#control, ControlSlot.Interrupt, SIGINT);
  }

  /**
   * Opens the run: from here Python takes interrupts. If a stop came before (it marked the
   * phase instead of signalling), the run stays closed, and this is its reason, one of
   * `InterruptReason`: the thread answers without running the code.
   */
  open(): number | undefined {
    const phase = Atomics.compareExchange(
      this.#control,
      ControlSlot.Phase,
      RunPhase.Closed,
      RunPhase.Running,
    );
    if (phase === RunPhase.StopBeforeStart) {
      Atomics.store(this.#control, ControlSlot.Phase, RunPhase.Closed);
      return Atomics.load(this.#control, ControlSlot.Reason);
    }
    this.#callbackDepth = 0;
    this.setInterruptBuffer(this.#interrupt);
    return undefined;
  }

  /**
   * Closes the run: no interrupt reaches Python from here on. The runtime calls it as it
   * starts to report; the thread again after the run, in case it failed before it could.
   */
  close(): void {
    if (Atomics.load(this.#control, ControlSlot.Phase) !== RunPhase.Running) return;
    this.setInterruptBuffer(undefined);
    Atomics.store(this.#control, ControlSlot.Phase, RunPhase.Closed);
    this.#closedFor = Atomics.load(this.#control, ControlSlot.Reason);
  }

  /**
   * An async run takes interrupts only while its event-loop callbacks run (loop_guard.py):
   * +1 entering one, -1 leaving it, 0 as the run starts to await. A depth, since a callback
   * can run others inside it (pyodide.ffi.run_sync).
   */
  inCallbacks(delta: number): void {
    this.#callbackDepth += delta;
    if (Atomics.load(this.#control, ControlSlot.Phase) !== RunPhase.Running) return;
    this.setInterruptBuffer(this.#callbackDepth > 0 ? this.#interrupt : undefined);
  }

  /**
   * Waits up to `ms` on the interrupt slot, so that a timeout wakes a sleeping request at once
   * (the patched `time.sleep`).
   */
  sleep(ms: number): void {
    Atomics.wait(this.#interrupt, 0, 0, ms);
    // A terminated thread is not stopped by Deno while it runs (see PythonHost.terminate): it
    // sleeps here for good rather than run the code on.
    while (Atomics.load(this.#control, ControlSlot.Terminated) === 1) {
      Atomics.wait(this.#control, ControlSlot.Terminated, 1);
    }
  }

  /**
   * Takes back an interrupt sent to a run that awaits: it would fire inside the runtime's own
   * code, so the run's task is cancelled instead.
   */
  withdrawInterrupt(): void {
    Atomics.store(this.#control, ControlSlot.Interrupt, 0);
  }
}
