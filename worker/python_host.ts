/**
 * The main-thread side of the Pyodide Web Worker: starts it, hands it one run at a time, and
 * enforces the timeout. On timeout it interrupts Python (KeyboardInterrupt); code that
 * swallows the interrupt is interrupted again, and if it still runs the Web Worker is
 * terminated and a fresh interpreter is started, all without ending the process.
 *
 * @module
 */

import {
  CONTROL_SLOTS,
  ControlSlot,
  type FromThread,
  InterruptReason,
  type ReadyMessage,
  type RunOutcome,
  SIGINT,
  type ToThread,
} from "./messages.ts";

export interface PythonHostOptions {
  /** Cap for stdout and for stderr, in bytes. */
  maxOutputBytes: number;
  /** How long to keep re-interrupting before the interpreter is restarted. */
  interruptGraceMs: number;
  /** Called when the interpreter fails in a way that cannot be recovered in-process. */
  onFatal: (message: string) => void;
}

/** How a timed-out run was stopped. */
export type StopStep = "interrupt" | "repeated_interrupt" | "interpreter_restart";

export interface RunReport extends RunOutcome {
  stoppedBy?: StopStep;
}

const REINTERRUPT_EVERY_MS = 50;

export class PythonHost {
  #thread!: Worker;
  #control = new Int32Array(new SharedArrayBuffer(CONTROL_SLOTS * 4));
  #ready!: Promise<ReadyMessage>;
  #seq = 0;
  #pending: { seq: number; resolve: (outcome: RunOutcome) => void } | undefined;
  #busy: Promise<unknown> = Promise.resolve();
  heapBytes = 0;
  restarts = 0;

  constructor(private readonly options: PythonHostOptions) {
    this.#startThread();
  }

  /** Resolves when the interpreter has loaded; rejects if it failed to. */
  get ready(): Promise<ReadyMessage> {
    return this.#ready;
  }

  /** Runs code, one run at a time, stopping it after `timeoutMs`. */
  run(code: string, stdin: string, timeoutMs: number): Promise<RunReport> {
    const next = this.#busy.then(() => this.#runNow(code, stdin, timeoutMs));
    this.#busy = next.catch(() => {});
    return next;
  }

  terminate(): void {
    this.#thread.terminate();
  }

  #startThread(): void {
    this.#thread = new Worker(new URL("./python_thread.ts", import.meta.url).href, {
      type: "module",
    });
    this.#ready = new Promise<ReadyMessage>((resolve, reject) => {
      this.#thread.onmessage = (event: MessageEvent<FromThread>) => {
        const message = event.data;
        if (message.type === "ready") {
          this.heapBytes = message.heapBytes;
          resolve(message);
        } else if (message.type === "done") {
          this.heapBytes = message.heapBytes;
          if (this.#pending?.seq === message.seq) this.#pending.resolve(message.outcome);
        } else {
          reject(new Error(message.message));
          this.options.onFatal(message.message);
        }
      };
      this.#thread.onerror = (event) => {
        event.preventDefault();
        reject(new Error(event.message));
        this.options.onFatal(event.message);
      };
    });
    this.#ready.catch(() => {});
    this.#post({
      type: "init",
      control: this.#control.buffer as SharedArrayBuffer,
      maxOutputBytes: this.options.maxOutputBytes,
    });
  }

  #post(message: ToThread): void {
    this.#thread.postMessage(message);
  }

  async #runNow(code: string, stdin: string, timeoutMs: number): Promise<RunReport> {
    await this.#ready;
    const seq = ++this.#seq;
    Atomics.store(this.#control, ControlSlot.Interrupt, 0);
    const finished = new Promise<RunOutcome>((resolve) => {
      this.#pending = { seq, resolve };
    });
    this.#post({ type: "run", seq, code, stdin });

    let stoppedBy: StopStep | undefined;
    let timer = setTimeout(() => {
      stoppedBy = "interrupt";
      this.#interrupt(InterruptReason.Timeout);
      const giveUpAt = performance.now() + this.options.interruptGraceMs;
      const escalate = () => {
        if (performance.now() >= giveUpAt) {
          stoppedBy = "interpreter_restart";
          this.#restartThread(seq);
          return;
        }
        // Pyodide clears the slot when Python takes the signal; a run still going swallowed it.
        if (Atomics.load(this.#control, ControlSlot.Interrupt) === 0) {
          stoppedBy = "repeated_interrupt";
          this.#interrupt(InterruptReason.Timeout);
        }
        timer = setTimeout(escalate, REINTERRUPT_EVERY_MS);
      };
      timer = setTimeout(escalate, REINTERRUPT_EVERY_MS);
    }, timeoutMs);

    try {
      const outcome = await finished;
      return stoppedBy ? { ...outcome, stoppedBy } : outcome;
    } finally {
      clearTimeout(timer);
      this.#pending = undefined;
    }
  }

  #interrupt(reason: number): void {
    Atomics.store(this.#control, ControlSlot.Reason, reason);
    Atomics.store(this.#control, ControlSlot.Interrupt, SIGINT);
    // Wakes a patched time.sleep blocked in Atomics.wait.
    Atomics.notify(this.#control, ControlSlot.Interrupt);
  }

  /** Ends a run that ignores interrupts: a new interpreter replaces the Web Worker. */
  #restartThread(seq: number): void {
    this.#thread.terminate();
    this.restarts++;
    const pending = this.#pending;
    this.#startThread();
    if (pending?.seq === seq) {
      pending.resolve({
        status: "timeout",
        stdout: "",
        stderr: "",
        truncated: false,
        result: null,
        error: {
          type: "TimeoutError",
          message: "the code ignored repeated interrupts; its output was lost with the interpreter",
          traceback: "",
        },
      });
    }
  }
}
