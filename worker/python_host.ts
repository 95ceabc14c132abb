/**
 * The main-thread side of the Python thread (the Web Worker that owns Pyodide): starts it, hands
 * it one run at a time, and stops a run on timeout or cancellation. Stopping escalates:
 * interrupt Python (KeyboardInterrupt); interrupt again while the code swallows it; then
 * terminate the Python thread and start a fresh interpreter, all without ending the process.
 *
 * @module
 */

import {
  type CallMessage,
  CONTROL_SLOTS,
  ControlSlot,
  type FromThread,
  InterruptReason,
  type ReadyMessage,
  type ReturnedMessage,
  type RunMessage,
  RunPhase,
  type SettledMessage,
  SIGINT,
  type ToThread,
} from "./messages.ts";
import {
  ignoredInterrupts,
  type RunOutcome,
  stoppedBeforeStart,
  type StopStep,
} from "./outcome.ts";
import type { RuntimeRequest } from "./runtime_contract.ts";
import type { InputFile } from "../lib/protocol.ts";
import type { Isolation } from "../lib/protocol.ts";
import type { Owner } from "./tenancy.ts";
import { type ChannelEnd, openChannel } from "./thread_channel.ts";

export interface PythonHostOptions {
  /** Cap for stdout and for stderr, in bytes. */
  maxOutputBytes: number;
  /** Cap on the content of each file a run returns, in bytes. */
  maxFileBytes: number;
  /** Cap on the content of all the files a run returns, in bytes. */
  maxReturnedFileBytes: number;
  /** Cap on the Wasm heap, in bytes. */
  maxHeapBytes: number;
  /** Cap on the bytes of files a request may hold in the file system. */
  maxFsBytes: number;
  /** Ceiling on the process's resident memory: a run that takes it past is stopped. */
  maxRssBytes: number;
  /** Memory snapshot to start (and restart) the interpreter from. */
  snapshotPath?: string;
  /** Pyodide lock file naming the loadable packages. */
  lockFileUrl?: string;
  /** Network mode: Python gets `fetch`. */
  allowNetwork: boolean;
  /** Testing only: act on failpoints (worker/failpoints.ts). */
  failpoints?: boolean;
  /** How long to keep re-interrupting before the interpreter is restarted. */
  interruptGraceMs: number;
  /** What is put back between requests. */
  isolation: Isolation;
  /** Bytes of session memory one export may carry: the line to the supervisor is capped. */
  maxExportBytes: number;
  /** Bytes parked sessions may hold. */
  maxParkedBytes: number;
  /** Called when the interpreter fails in a way that cannot be recovered in-process. */
  onFatal: (message: string) => void;
  /** Called when a fresh interpreter replaced one whose isolation reset failed. */
  onInterpreterReplaced: (reason: string) => void;
  /** Called, before the call resolves, with the sessions a call (`call`) dropped. */
  onSessionsLost: (lost: { sessionId: string; reason: string }[]) => void;
}

export interface RunReport extends RunOutcome {
  stoppedBy?: StopStep;
}

const REINTERRUPT_EVERY_MS = 50;
/**
 * How often a run's resident memory is checked. Python reaches memory outside the Wasm heap
 * and its cap (`to_js` copies, file system metadata): 2.8 GB in 8.6 s, in one review. Reading
 * it costs 13 us.
 */
const RSS_CHECK_EVERY_MS = 50;
/**
 * What a run may add before it is stopped at the ceiling: a worker already past it (being
 * replaced after an earlier answer) still serves what comes meanwhile.
 */
const RSS_RUN_ALLOWANCE_BYTES = 64 << 20;
/**
 * How long past the interrupt grace a run that is no longer running code (its package loading,
 * or the report and the file reset of code that ended) may take before the interpreter is
 * replaced anyway: only a destructor looping in the reset takes that long.
 */
const FINISH_ALLOWANCE_MS = 10_000;
/**
 * How long a run's after-work (its reset, after the answer) may take before the interpreter is
 * replaced: it takes milliseconds, unless a request left work that never yields (a thenable
 * that resolves itself forever, a destructor that loops), which the next request, maybe
 * another tenant's, would otherwise wait for until its timeout.
 */
const AFTER_WORK_DEADLINE_MS = 2_000;

/** What one run needs besides its code. */
export interface RunRequest {
  /** The request for the runtime's `run`. */
  request: RuntimeRequest;
  /** Whose state the request runs in. */
  owner: Owner;
  files: InputFile[];
  packages: string[];
  timeoutMs: number;
  /** Receives output as it is written, when set. */
  onOutput?: (stream: "stdout" | "stderr", text: string) => void;
  /** Called once the run's after-work (its reset, a park or resume before it) is done. */
  onSettled?: (settled: SettledMessage) => void;
}

interface ActiveRun {
  seq: number;
  message: RunMessage;
  resolve: (outcome: RunOutcome) => void;
  onOutput?: RunRequest["onOutput"];
  stoppedBy?: StopStep;
  /** Interrupts put in the slot for this run. */
  interruptsSent: number;
  escalation?: ReturnType<typeof setTimeout>;
}

export class PythonHost {
  #thread!: Worker;
  #channel!: ChannelEnd<ToThread, FromThread>;
  #control!: Int32Array;
  #ready!: Promise<ReadyMessage>;
  #seq = 0;
  #active: ActiveRun | undefined;
  /** Runs queued behind the active one, a session call, or an interpreter's start. */
  #waiting = new Set<{ cancelled: boolean }>();
  #calls = new Map<number, (message: ReturnedMessage) => void>();
  /** Runs whose after-work is not reported yet, by sequence number. */
  #settling = new Map<number, (message: SettledMessage) => void>();
  /** The last run's after-work, which the thread must finish before it is sent anything else. */
  #afterWork: { seq: number; done: PromiseWithResolvers<void> } | undefined;
  #queue: Promise<unknown> = Promise.resolve();
  heapBytes = 0;
  /** Set once a request left a change the isolation reset could not undo. */
  tainted = false;
  /** Interpreters replaced in place: code that ignored interrupts, or a reset that failed. */
  restarts = 0;

  constructor(private readonly options: PythonHostOptions) {
    this.#startThread();
  }

  /** Resolves when the interpreter has loaded; rejects if it failed to. */
  get ready(): Promise<ReadyMessage> {
    return this.#ready;
  }

  /** Whether a run is in progress. */
  get busy(): boolean {
    return this.#active !== undefined;
  }

  /** Runs a request, one at a time, stopping it after `timeoutMs`. */
  run(request: RunRequest): Promise<RunReport> {
    const waiting = { cancelled: false };
    this.#waiting.add(waiting);
    return this.#serialize(() => this.#runNow(request, waiting));
  }

  /** Calls a runtime function (sessions) between runs. */
  call(fn: CallMessage["fn"], arg?: string): Promise<string> {
    return this.#serialize(async () => {
      await this.#afterLastRun();
      await this.#ready;
      const seq = ++this.#seq;
      const returned = new Promise<ReturnedMessage>((resolve) => this.#calls.set(seq, resolve));
      this.#post({ type: "call", seq, fn, arg });
      const { value, error, lost } = await returned;
      if (lost?.length) this.options.onSessionsLost(lost);
      if (error !== undefined) throw new Error(`${fn} failed: ${error}`);
      return value;
    });
  }

  #serialize<T>(work: () => Promise<T>): Promise<T> {
    const next = this.#queue.then(work);
    this.#queue = next.catch(() => {});
    return next;
  }

  /** Stops the current run, or else the next, which then reports `cancelled`; false if none. */
  cancel(): boolean {
    if (this.#active) {
      this.#stop(this.#active, InterruptReason.Cancelled);
      return true;
    }
    const next = this.#waiting.values().next().value;
    if (next) next.cancelled = true;
    return next !== undefined;
  }

  terminate(): void {
    this.#channel.close();
    this.#thread.terminate();
    // Deno's terminate() ends a Web Worker only once it is back in its event loop (2.9.6):
    // code that runs on, or sleeps in the patched time.sleep, would go on running the old
    // interpreter's Python after its sleep. The mark makes that sleep park the thread for good
    // (python_thread.ts); the process, which asks to be replaced, ends it.
    Atomics.store(this.#control, ControlSlot.Terminated, 1);
    Atomics.notify(this.#control, ControlSlot.Interrupt);
  }

  #startThread(): void {
    // A buffer per thread: a terminated thread may run on for a moment, and must not take
    // the signals meant for its successor.
    this.#control = new Int32Array(new SharedArrayBuffer(CONTROL_SLOTS * 4));
    this.#thread = new Worker(new URL("./python_thread.ts", import.meta.url).href, {
      type: "module",
    });
    this.#ready = new Promise<ReadyMessage>((resolve, reject) => {
      this.#channel = openChannel(this.#thread, (message: FromThread) => {
        if (message.type === "ready") {
          this.heapBytes = message.heapBytes;
          resolve(message);
        } else if (message.type === "done") {
          this.heapBytes = message.heapBytes;
          this.tainted ||= message.tainted;
          if (this.#active?.seq === message.seq) this.#active.resolve(message.outcome);
        } else if (message.type === "settled") {
          this.#settling.get(message.seq)?.(message);
          this.#settling.delete(message.seq);
          if (this.#afterWork?.seq === message.seq) this.#afterWork.done.resolve();
        } else if (message.type === "output") {
          if (this.#active?.seq === message.seq) {
            this.#active.onOutput?.(message.stream, message.text);
          }
        } else if (message.type === "returned") {
          this.#calls.get(message.seq)?.(message);
          this.#calls.delete(message.seq);
        } else if (message.type === "broken") {
          this.#replaceBrokenThread(message.message);
        } else {
          reject(new Error(message.message));
          this.options.onFatal(message.message);
        }
      });
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
      maxFileBytes: this.options.maxFileBytes,
      maxReturnedFileBytes: this.options.maxReturnedFileBytes,
      maxHeapBytes: this.options.maxHeapBytes,
      maxFsBytes: this.options.maxFsBytes,
      snapshotPath: this.options.snapshotPath,
      lockFileUrl: this.options.lockFileUrl,
      allowNetwork: this.options.allowNetwork,
      failpoints: this.options.failpoints ?? false,
      isolation: this.options.isolation,
      maxParkedBytes: this.options.maxParkedBytes,
      maxExportBytes: this.options.maxExportBytes,
    });
  }

  #post(message: ToThread): void {
    this.#channel.send(message);
  }

  async #runNow(
    { request, owner, files, packages, timeoutMs, onOutput, onSettled }: RunRequest,
    waiting: { cancelled: boolean },
  ): Promise<RunReport> {
    try {
      // In this order: the interpreter may be replaced while its after-work is awaited.
      await this.#afterLastRun();
      await this.#ready;
    } finally {
      this.#waiting.delete(waiting);
    }
    if (waiting.cancelled) {
      return { ...stoppedBeforeStart(InterruptReason.Cancelled), stoppedBy: "interrupt" };
    }
    // The last run is answered, so the thread no longer reads what it left in the slots; the
    // phase stays the thread's: it may still be resetting after that run, with Python closed
    // to interrupts.
    Atomics.store(this.#control, ControlSlot.Interrupt, 0);
    Atomics.store(this.#control, ControlSlot.Reason, InterruptReason.None);
    Atomics.compareExchange(
      this.#control,
      ControlSlot.Phase,
      RunPhase.StopBeforeStart,
      RunPhase.Closed,
    );
    let resolve!: (outcome: RunOutcome) => void;
    const finished = new Promise<RunOutcome>((r) => resolve = r);
    const seq = ++this.#seq;
    const message: RunMessage = {
      type: "run",
      seq,
      request,
      owner,
      files,
      packages,
      stream: onOutput !== undefined,
    };
    const run: ActiveRun = { seq, message, resolve, onOutput, interruptsSent: 0 };
    if (onSettled) this.#settling.set(seq, onSettled);
    this.#afterWork = { seq, done: Promise.withResolvers() };
    this.#active = run;
    this.#post(message);
    const timer = setTimeout(() => this.#stop(run, InterruptReason.Timeout), timeoutMs);
    const rssLimit = Math.max(
      this.options.maxRssBytes,
      Deno.memoryUsage().rss + RSS_RUN_ALLOWANCE_BYTES,
    );
    // Only while the code runs: what comes after (its files read back, the answer) is bounded
    // by the caps, and stopping it would lose the answer.
    const memoryWatch = setInterval(() => {
      const running = Atomics.load(this.#control, ControlSlot.Phase) === RunPhase.Running;
      if (running && Deno.memoryUsage().rss > rssLimit) {
        this.#stop(run, InterruptReason.MemoryLimit);
      }
    }, RSS_CHECK_EVERY_MS);
    try {
      const outcome = await finished;
      return run.stoppedBy ? { ...outcome, stoppedBy: this.#stopStep(run) } : outcome;
    } finally {
      clearTimeout(timer);
      clearInterval(memoryWatch);
      clearTimeout(run.escalation);
      this.#active = undefined;
    }
  }

  /**
   * Waits for the last run's after-work, up to AFTER_WORK_DEADLINE_MS; past it, replaces the
   * interpreter (the process then asks to be replaced, as after a broken reset).
   */
  async #afterLastRun(): Promise<void> {
    const pending = this.#afterWork;
    if (!pending) return;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const overdue = await Promise.race([
      pending.done.promise.then(() => false),
      new Promise<boolean>((resolve) => timer = setTimeout(resolve, AFTER_WORK_DEADLINE_MS, true)),
    ]);
    clearTimeout(timer);
    if (this.#afterWork === pending) this.#afterWork = undefined;
    if (!overdue) return;
    this.#replaceThread();
    this.tainted = true;
    this.options.onInterpreterReplaced(
      `a request's after-work did not finish within ${AFTER_WORK_DEADLINE_MS} ms`,
    );
  }

  /** Interrupts `run`, again while it swallows the interrupt, then restarts the interpreter. */
  #stop(run: ActiveRun, reason: number): void {
    if (run.stoppedBy) return;
    run.stoppedBy = "interrupt";
    this.#interrupt(run, reason);
    const giveUpAt = performance.now() + this.options.interruptGraceMs;
    const escalate = () => {
      const closed = Atomics.load(this.#control, ControlSlot.Phase) !== RunPhase.Running;
      if (performance.now() >= giveUpAt + (closed ? FINISH_ALLOWANCE_MS : 0)) {
        run.stoppedBy = "interpreter_restart";
        this.#restartThread(run, reason);
        return;
      }
      // Pyodide clears the slot when Python takes the signal; a run still going swallowed it
      // (or is slow to unwind: another interrupt then does no harm).
      if (
        Atomics.load(this.#control, ControlSlot.Interrupt) === 0 &&
        Atomics.load(this.#control, ControlSlot.Phase) === RunPhase.Running
      ) {
        this.#interrupt(run, reason);
      }
      run.escalation = setTimeout(escalate, REINTERRUPT_EVERY_MS);
    };
    run.escalation = setTimeout(escalate, REINTERRUPT_EVERY_MS);
  }

  /** Which step stopped `run`, from what Python took: an interrupt left in the slot it did not. */
  #stopStep(run: ActiveRun): StopStep {
    if (run.stoppedBy === "interpreter_restart") return run.stoppedBy;
    const untaken = Atomics.load(this.#control, ControlSlot.Interrupt) === SIGINT ? 1 : 0;
    return run.interruptsSent - untaken > 1 ? "repeated_interrupt" : "interrupt";
  }

  #interrupt(run: ActiveRun, reason: number): void {
    Atomics.store(this.#control, ControlSlot.Reason, reason);
    // Before the thread takes up the run, the mark tells it to answer without running the
    // code; while the run finishes, the mark is cleared before the next one.
    const phase = Atomics.compareExchange(
      this.#control,
      ControlSlot.Phase,
      RunPhase.Closed,
      RunPhase.StopBeforeStart,
    );
    if (phase !== RunPhase.Running) return;
    run.interruptsSent++;
    Atomics.store(this.#control, ControlSlot.Interrupt, SIGINT);
    // Wakes a patched time.sleep blocked in Atomics.wait.
    Atomics.notify(this.#control, ControlSlot.Interrupt);
    // Code waiting in top-level `await` runs no Python to take the signal: cancel its task.
    this.#post({ type: "cancel_await" });
  }

  /**
   * Replaces an interpreter whose reset failed, so that no request is lost with it. Its last
   * run was answered; what was sent to it since, it did not start: the run goes to the new
   * interpreter, a session call fails (the sessions were in the old one).
   */
  #replaceBrokenThread(reason: string): void {
    this.#replaceThread();
    // The old interpreter's memory is not given back at once (259 MB resident right after, in
    // one measurement): the process asks to be replaced once its pending run is answered.
    this.tainted = true;
    this.options.onInterpreterReplaced(reason);
    for (const [seq, answer] of this.#calls) {
      answer({
        type: "returned",
        seq,
        value: "",
        error: `the interpreter was replaced: ${reason}`,
      });
    }
    this.#calls.clear();
    const run = this.#active;
    if (run) this.#ready.then(() => this.#active === run && this.#post(run.message), () => {});
  }

  /** Ends a run that ignores interrupts: a new interpreter replaces the Python thread. */
  #restartThread(run: ActiveRun, reason: number): void {
    this.#replaceThread();
    run.resolve(ignoredInterrupts(reason));
  }

  /** A fresh interpreter in a new Python thread, in place of the current one. */
  #replaceThread(): void {
    this.#settling.clear();
    // The new interpreter has no after-work pending.
    this.#afterWork?.done.resolve();
    this.terminate();
    this.restarts++;
    this.#startThread();
  }
}
