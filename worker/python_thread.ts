/**
 * The Web Worker that owns Pyodide. It loads the interpreter once, then runs one request at a
 * time. Running off the main thread lets `worker_server.ts` interrupt Python through the
 * shared control buffer and keep answering while Python runs.
 *
 * @module
 */

/// <reference lib="deno.worker" />

import type { PyProxy } from "pyodide/ffi";
import { FsQuota, limitNames } from "./fs_quota.ts";
import { FsWatch } from "./fs_watch.ts";
import { protectContents } from "./image/fs_image.ts";
import { PythonHandles } from "./image/python_handles.ts";
import { type Crash, CrashWatch, isFatal } from "./crash.ts";
import { bootInterpreter, type Interpreter } from "./interpreter.ts";
import { emscriptenOf, internalApiOf } from "./pyodide_internals.ts";
import { installStoppableClock, withClockStopped } from "./stopped_clock.ts";
import { type GivenFiles, RunFiles } from "./run_files.ts";
import {
  freezeShared,
  guardWasmLoading,
  hardenThread,
  hideHostPathsInStacks,
  isolatedFunction,
  pythonGlobals,
} from "./sandbox.ts";
import {
  type CallMessage,
  ControlSlot,
  type FromThread,
  type InitMessage,
  InterruptReason,
  type RunMessage,
  type RunOutcome,
  RunPhase,
  SIGINT,
  stoppedBeforeStart,
  type ToThread,
} from "./messages.ts";
import { acceptChannel } from "./thread_channel.ts";
import { failsAfterAnswer } from "./failpoints.ts";
import {
  type EnterReport,
  type ResetKind,
  SessionLostError,
  SessionRefusedError,
  Tenancy,
} from "./tenancy.ts";

/** Collects one stream's output up to a byte cap; past it, asks Python to stop. */
class OutputCapture {
  #chunks: string[] = [];
  #bytes = 0;
  #decoder = new TextDecoder();
  truncated = false;

  constructor(
    private readonly maxBytes: number,
    private readonly onLimit: () => void,
    private readonly onText: (text: string) => void,
  ) {}

  write = (buffer: Uint8Array): number => {
    if (this.truncated) return buffer.length;
    const room = this.maxBytes - this.#bytes;
    const kept = buffer.length > room ? buffer.subarray(0, room) : buffer;
    const text = this.#decoder.decode(kept, { stream: true });
    this.#chunks.push(text);
    this.#bytes += kept.length;
    if (text) this.onText(text);
    if (kept !== buffer) {
      this.truncated = true;
      this.onLimit();
    }
    return buffer.length;
  };

  take(): string {
    const text = this.#chunks.join("") + this.#decoder.decode();
    this.#chunks = [];
    this.#bytes = 0;
    this.truncated = false;
    return text;
  }
}

const channel = acceptChannel<FromThread, ToThread>(self, (message) => void handle(message));
const send = (message: FromThread) => channel.send(message);

// A promise that Python rejects and drops (`Array.fromAsync` over a failing iterable, a fetch
// aborted as its request ended) fails that code, not the worker: Deno would end the thread. So
// does an interpreter's crash that surfaces outside the run's own frames (in an event-loop
// callback, say): `CrashWatch` recorded it, and the thread recovers.
globalThis.addEventListener("unhandledrejection", (event) => {
  event.preventDefault();
  if (isFatal(event.reason)) return;
  // Its kind only: the message is the request's, and stays out of the logs.
  const kind = event.reason instanceof Error ? event.reason.name : typeof event.reason;
  console.error(`python thread: a promise was rejected and not handled (${kind})`);
});
globalThis.addEventListener("error", (event) => {
  if (isFatal(event.error)) event.preventDefault();
});

/**
 * Caps the Wasm heap. Emscripten grows memory through `WebAssembly.Memory.prototype.grow`;
 * when that throws, malloc fails and Python raises MemoryError, and the interpreter lives
 * on. Installed before Pyodide loads; the original `grow` stays in this closure.
 */
function capHeapGrowth(maxBytes: number): void {
  const grow = WebAssembly.Memory.prototype.grow;
  const PAGE = 65536;
  WebAssembly.Memory.prototype.grow = function (this: WebAssembly.Memory, pages: number) {
    if (this.buffer.byteLength + pages * PAGE > maxBytes) {
      throw new RangeError(`Wasm heap cap of ${maxBytes} bytes reached`);
    }
    return grow.call(this, pages);
  };
}

/**
 * Pyodide's signal check (`_Py_CheckEmscriptenSignals_Helper`) reads the interrupt buffer and
 * then writes 0 to it, in two steps: a signal the main thread stored between them was lost (11
 * of 2,500 cancels that came as the run started; the escalation's second interrupt then stopped
 * the code, 50 ms late). So the buffer Pyodide sees is a private one, filled from the shared
 * slot by `Atomics.exchange` when the check reads it: the check's write of 0 clears only what it
 * read, and a signal stored meanwhile waits in the slot for the next check.
 *
 * The check looks up `Module.Py_EmscriptenSignalBuffer` three times: is it set, the read, the
 * write. An accessor on that name fills the private buffer on the second lookup only. (An
 * accessor on element 0 would need no counting, but V8 runs every such access through its
 * runtime: a bare Python loop ran 8% slower, against 1-2% for this.) Nothing else looks the
 * name up while this thread runs Python: `checkInterrupt` does only without the GIL, and this
 * thread calls it with the GIL; user code cannot reach the module (sandbox.ts). A lookup out of
 * step would never invent a signal, but could drop every one until the next run opens: the
 * escalation would then replace the interpreter.
 */
function guardSignalBuffer(module: object): void {
  const taken = new Int32Array(1);
  let slot: Int32Array | undefined;
  let lookup = 0;
  Object.defineProperty(module, "Py_EmscriptenSignalBuffer", {
    get() {
      if (slot === undefined) return undefined;
      const at = lookup;
      lookup = at === 2 ? 0 : at + 1;
      // A plain read first: the exchange, a locked instruction, is for a signal that is there.
      if (at === 1 && slot[0] !== 0 && taken[0] === 0) taken[0] = Atomics.exchange(slot, 0, 0);
      return taken;
    },
    set(buffer: Int32Array | undefined) {
      slot = buffer;
      taken[0] = 0;
      lookup = 0;
    },
  });
}

/** Restores from the snapshot when there is one; falls back to a plain start if that fails. */
async function boot(init: InitMessage, jsglobals: object): Promise<Interpreter> {
  const lockFileUrl = init.lockFileUrl;
  if (init.snapshotPath) {
    try {
      const snapshot = Deno.readFile(init.snapshotPath);
      return await bootInterpreter({ snapshot, lockFileUrl, jsglobals });
    } catch (error) {
      console.error(`snapshot restore failed, starting from scratch: ${error}`);
    }
  }
  return await bootInterpreter({ lockFileUrl, jsglobals });
}

interface Thread {
  run(message: RunMessage): Promise<void>;
  call(message: CallMessage): Promise<void>;
  cancelAwait(): void;
}

async function start(init: InitMessage): Promise<Thread> {
  const started = performance.now();
  const control = new Int32Array(init.control);
  const interrupt = new Int32Array(init.control, ControlSlot.Interrupt * 4, 1);
  const stopFor = (reason: number) => {
    if (Atomics.load(control, ControlSlot.Phase) !== RunPhase.Running) return;
    Atomics.store(control, ControlSlot.Reason, reason);
    Atomics.store(control, ControlSlot.Interrupt, SIGINT);
  };
  let streaming: { seq: number } | undefined;
  let running = false;
  const capture = (stream: "stdout" | "stderr") =>
    new OutputCapture(
      init.maxOutputBytes,
      () => stopFor(InterruptReason.OutputLimit),
      (text) => streaming && send({ type: "output", seq: streaming.seq, stream, text }),
    );
  const stdout = capture("stdout");
  const stderr = capture("stderr");

  capHeapGrowth(init.maxHeapBytes);
  // Made once the worker is sealed, in the image modes.
  let handles: PythonHandles | undefined;
  const jsglobals = pythonGlobals(init.allowNetwork, () => handles?.signal);
  const { pyodide, runtime, restored } = await boot(init, jsglobals);
  pyodide.setStdout({ write: stdout.write, isatty: false });
  pyodide.setStderr({ write: stderr.write, isatty: false });
  pyodide.setStdin({ error: true });
  const emscripten = emscriptenOf(pyodide);
  const crashes = new CrashWatch({ api: internalApiOf(pyodide), module: emscripten });
  guardSignalBuffer(emscripten);
  // Python takes interrupts only while a request's code runs (`openRun` to `closeRun`): the
  // phase check in the main thread cannot stop a signal it sent a moment before the run
  // closed, and one that landed in the report or the reset would break the worker.
  let callbackDepth = 0;
  const openRun = () => {
    callbackDepth = 0;
    pyodide.setInterruptBuffer(interrupt);
  };
  // Why the run was stopped (one of InterruptReason), as it stood when the run closed: a stop
  // that comes later finds the code done, and does not turn its result into a timeout.
  let closedFor: number = InterruptReason.None;
  const closeRun = () => {
    if (Atomics.load(control, ControlSlot.Phase) !== RunPhase.Running) return;
    pyodide.setInterruptBuffer(undefined as unknown as Int32Array);
    Atomics.store(control, ControlSlot.Phase, RunPhase.Closed);
    closedFor = Atomics.load(control, ControlSlot.Reason);
  };

  // Attribute proxies are borrowed from the module's: copies outlive it.
  const install = runtime.install.copy() as PyProxy & ((...a: unknown[]) => void);
  const runPython = runtime.run.copy() as PyProxy & ((request: string, reseed: boolean) => unknown);
  const cancelCurrent = runtime.cancel_current.copy() as PyProxy & (() => void);
  const seal = runtime.seal.copy() as PyProxy & (() => void);
  const resetInterpreter = runtime.reset.copy() as PyProxy & (() => void);
  const acceptInstalled = runtime.accept_installed.copy() as PyProxy & (() => void);
  const watchedPaths = runtime.watched_paths.copy() as PyProxy & (() => string);
  const restoreFiles = runtime.restore_files.copy() as PyProxy & ((changed: string) => boolean);
  const functions = {
    drop_session: runtime.drop_session.copy(),
    export_sessions: runtime.export_sessions.copy(),
    import_sessions: runtime.import_sessions.copy(),
  } as Record<CallMessage["fn"], PyProxy & ((arg?: string) => unknown)>;
  // Blocks on the interrupt slot so that a timeout wakes a sleeping request at once.
  const waitMs = isolatedFunction((ms: number) => {
    Atomics.wait(interrupt, 0, 0, ms);
    // A terminated thread is not stopped by Deno while it runs (see PythonHost.terminate): it
    // sleeps here for good rather than run the code on.
    while (Atomics.load(control, ControlSlot.Terminated) === 1) {
      Atomics.wait(control, ControlSlot.Terminated, 1);
    }
    pyodide.checkInterrupt();
  });
  // An async run takes interrupts only while its event-loop callbacks run (loop_guard.py):
  // +1 entering one, -1 leaving it, 0 as the run starts to await. A depth, since a callback
  // can run others inside it (pyodide.ffi.run_sync).
  const interruptsInCallbacks = isolatedFunction((delta: number) => {
    callbackDepth += delta;
    if (Atomics.load(control, ControlSlot.Phase) !== RunPhase.Running) return;
    pyodide.setInterruptBuffer(callbackDepth > 0 ? interrupt : undefined as unknown as Int32Array);
  });
  // With the memory image, `random` is reseeded by every run that starts from it instead: the
  // image itself must be the same in every worker, so that sessions can move between them.
  install(
    waitMs,
    isolatedFunction(closeRun),
    interruptsInCallbacks,
    init.maxOutputBytes,
    init.isolation === "none",
  );
  install.destroy();
  runtime.destroy();
  hardenThread(pyodide, init.allowNetwork);
  seal();
  seal.destroy();
  const { PythonError } = pyodide.ffi;
  const fsWatch = new FsWatch(pyodide.FS);
  const runFiles = new RunFiles(pyodide.FS, init.maxFileBytes, init.maxReturnedFileBytes);
  fsWatch.mark(JSON.parse(watchedPaths()));
  // Set once a request changed a file the reset cannot restore; the worker is then replaced.
  let tainted = false;
  // Set once the interpreter's reset failed: no request may run here again (see `reset`).
  let broken = false;
  /** No request may run here again: the main thread replaces this interpreter. */
  const breakDown = (why: string) => {
    broken = true;
    send({ type: "broken", message: why });
  };
  /** Runs reset steps; what a failure says, if they fail with a Python exception. */
  const reset = (steps: () => void): string | undefined => {
    try {
      steps();
    } catch (error) {
      // A crash (a destructor the reset set off may end the interpreter) is recovered from by
      // the caller; anything else but a Python exception is a broken runtime: the process ends
      // (see `fatal`).
      if (crashes.current) return `the isolation reset crashed: ${crashes.current.reason}`;
      if (!(error instanceof PythonError)) throw error;
      // The message is the whole traceback; its last line names the error.
      return `the isolation reset failed: ${error.message.trim().split("\n").at(-1)}`;
    }
  };
  /**
   * Undoes the file system changes of the request that just ran (the Python-level reset's last
   * part); false if some change cannot be undone.
   */
  const restoreChangedFiles = (): boolean => {
    const changed = fsWatch.changed();
    if (changed.length === 0) return true;
    let clean: boolean;
    try {
      clean = restoreFiles(JSON.stringify(changed)) as boolean;
    } catch (error) {
      // The reset itself failed (a file it cannot write, say).
      if (!(error instanceof PythonError)) throw error;
      clean = false;
    }
    fsWatch.mark(JSON.parse(watchedPaths()));
    return clean;
  };

  // The Wasm heap only grows; its size is what a worker costs.
  const heapBytes = () => emscripten.HEAP8.length;
  const pythonVersion = pyodide.runPython("import sys; sys.version.split()[0]") as string;
  const loadingPackages = guardWasmLoading();
  hideHostPathsInStacks();
  // The memory image (`--isolation` request or tenant), taken once the worker is sealed.
  const imaged = init.isolation === "none" ? undefined : (() => {
    protectContents(emscripten.MEMFS);
    handles = new PythonHandles(emscripten);
    return {
      module: emscripten,
      loadedPackages: pyodide.loadedPackages as unknown as Record<string, string>,
      handles,
    };
  })();
  // After protectContents, in the image modes: a write refused for want of room copies nothing.
  const fsQuota = new FsQuota(emscripten.FS, emscripten.MEMFS, init.maxFsBytes);
  limitNames(emscripten.FS);
  freezeShared(emscripten, jsglobals);
  const tenancy = new Tenancy(init.isolation, imaged, init.maxParkedBytes);
  tenancy.start();
  fsQuota.rebase();
  send({
    type: "ready",
    pyodideVersion: pyodide.version,
    pythonVersion,
    loadMs: performance.now() - started,
    restored,
    heapBytes: heapBytes(),
    fsBytes: fsQuota.measure(),
  });

  /** Tells the main thread that the run's after-work is done, with what it cost. */
  const settle = (
    seq: number,
    entered: EnterReport,
    reset: ResetKind,
    resetMs: number,
    recovered?: Crash["kind"],
  ) => {
    send({
      type: "settled",
      seq,
      reset,
      resetMs,
      restoreMs: entered.restoreMs,
      parkMs: entered.parkMs,
      resumeMs: entered.resumeMs,
      resumedBytes: entered.resumedBytes,
      parkedBytes: tenancy.parkedBytes,
      fsBytes: fsQuota.measure(),
      lost: tenancy.takeDropped(),
      overgrown: tenancy.overgrown,
      recovered,
    });
  };

  const errorJson = (type: string, message: string, traceback = "") =>
    JSON.stringify({ status: "error", result: null, error: { type, message, traceback } });

  /**
   * Loads what is not loaded yet; loadPackage reports failures instead of throwing. Pyodide's
   * loader is Python the request's owner may have patched (in its session), so the loading may
   * end the interpreter: the crash is then the answer, recovered from like the run's.
   */
  const loadPackages = async (names: string[]): Promise<string | undefined> => {
    const missing = names.filter((name) => !(name in pyodide.loadedPackages));
    if (missing.length === 0) return undefined;
    const messages: string[] = [];
    try {
      // With the clock stopped, every worker that loads the same packages gets the same image.
      await withClockStopped(() =>
        loadingPackages(() =>
          Promise.race([
            pyodide.loadPackage(missing, {
              messageCallback: () => {},
              errorCallback: (message) => messages.push(message),
            }),
            crashes.happened,
          ])
        )
      );
    } catch (error) {
      messages.push(error instanceof Error ? error.message : String(error));
    }
    if (crashes.current) return crashJson(crashes.current);
    await withClockStopped(() => {
      acceptInstalled();
      fsWatch.mark(JSON.parse(watchedPaths()));
      tenancy.packagesLoaded();
      fsQuota.rebase();
    });
    const failed = missing.filter((name) => !(name in pyodide.loadedPackages));
    if (failed.length === 0) return undefined;
    return errorJson(
      "PackageLoadError",
      `could not load ${failed.join(", ")}: ${messages.join(" ") || "unknown error"}`,
    );
  };

  /**
   * The runtime's report. The request may have patched what the runtime reports with (say
   * `json.dumps`; the reset undoes it after the report): a report that is not what the
   * runtime writes becomes an error result of that request, not a broken worker.
   */
  const readOutcome = (json: string): RunOutcome => {
    try {
      const outcome = JSON.parse(json);
      if (typeof outcome?.status === "string") return outcome as RunOutcome;
    } catch {
      // Reported below.
    }
    return JSON.parse(errorJson(
      "RuntimeError",
      "the result could not be reported: the code replaced part of what the runtime uses",
    ));
  };

  /** Runs the request; a Python exception that escapes the runtime itself is still a result. */
  const runToJson = async (
    message: RunMessage,
    given: GivenFiles,
    reseed: boolean,
  ): Promise<string> => {
    try {
      runFiles.put(message.files, given);
    } catch (error) {
      // The file system reset removes what was written.
      return errorJson("FileError", (error as Error).message);
    }
    try {
      const json = runPython(message.request, reseed);
      if (typeof json === "string") return json;
      const task = json as PyProxy & Promise<string>;
      // A crash in an event-loop callback leaves the task pending for good.
      const done = await Promise.race([task, crashes.happened]);
      if (crashes.current) return crashJson(crashes.current);
      task.destroy();
      return done as string;
    } catch (error) {
      if (crashes.current) return crashJson(crashes.current);
      // Anything else (a JavaScript error of the runtime's own) breaks the worker.
      if (!(error instanceof PythonError)) throw error;
      return errorJson(error.type, "", error.message);
    }
  };

  /** A crash's outcome. Nothing here may call into Wasm: its memory is as the crash left it. */
  const crashJson = (crash: Crash): string =>
    crash.kind === "exited"
      ? JSON.stringify({ status: "exited", exit_code: crash.exitCode, result: null, error: null })
      : JSON.stringify({
        status: "crashed",
        result: null,
        error: { type: "InterpreterCrash", message: crash.reason, traceback: "" },
      });

  /**
   * After a crash: the image is put back (a session whose state was live is lost), and checked
   * by a run of Python. What failed, if the interpreter must be replaced instead (there is no
   * image with `--isolation none`).
   */
  const recover = (crash: Crash): string | undefined => {
    const failure = `the interpreter ${crash.kind}: ${crash.reason}`;
    if (!imaged) return failure;
    tenancy.recover(`was lost: the interpreter ${crash.kind} (${crash.reason})`);
    crashes.recovered();
    try {
      pyodide.runPython("0");
    } catch {
      return `${failure}; the image put back did not run`;
    }
  };
  /** Recovers from a crash that came between runs (an event-loop callback's); false if broken. */
  const recoveredBetweenRuns = (): boolean => {
    const failure = crashes.current && recover(crashes.current);
    if (failure === undefined) return true;
    breakDown(failure);
    return false;
  };

  return {
    async run(message) {
      // The main thread posts it again to the interpreter that replaces this one.
      if (broken || !recoveredBetweenRuns()) return;
      let entered: EnterReport;
      try {
        entered = tenancy.enter(message.owner);
      } catch (error) {
        const lost = error instanceof SessionLostError;
        if (!lost && !(error instanceof SessionRefusedError)) throw error;
        const outcome = JSON.parse(
          errorJson(error.name, lost ? error.reason : error.message),
        );
        send({
          type: "done",
          seq: message.seq,
          outcome: { ...outcome, status: lost ? "session_lost" : "session_refused" },
          heapBytes: heapBytes(),
          tainted,
        });
        settle(message.seq, { fresh: false }, "none", 0);
        return;
      }
      // Before the run opens: the loading's Python steps are the runtime's own, and a stop
      // that comes meanwhile marks the phase, so that the code does not start.
      const packageError = await loadPackages(message.packages);
      const phase = Atomics.compareExchange(
        control,
        ControlSlot.Phase,
        RunPhase.Closed,
        RunPhase.Running,
      );
      if (phase === RunPhase.StopBeforeStart) {
        Atomics.store(control, ControlSlot.Phase, RunPhase.Closed);
        const outcome = stoppedBeforeStart(Atomics.load(control, ControlSlot.Reason));
        send({ type: "done", seq: message.seq, outcome, heapBytes: heapBytes(), tainted });
        settle(message.seq, entered, "none", 0);
        return;
      }
      openRun();
      // Output written between runs (by a destructor the reset set off, say) is no request's.
      stdout.take();
      stderr.take();
      streaming = message.stream ? { seq: message.seq } : undefined;
      running = true;
      tenancy.ran();
      const given: GivenFiles = new Map();
      fsQuota.open();
      const json = packageError ?? await runToJson(message, given, entered.fresh);
      // The runtime closed the run already, unless it failed before it could.
      closeRun();
      const fsFull = fsQuota.close();
      const { files, omitted } = runFiles.collect(given);
      // The reset runs after the answer is sent, off the request's path, and before the next
      // request (this handler ends with it). Without the memory image (`--isolation none`),
      // a request that changed files (its run directory's included) is reset first: its answer
      // then says whether the worker is tainted. The interpreter's reset comes before the
      // files' (the file reset calls os and shutil, which the request may have patched).
      const resetFirst = tenancy.mode === "none" && !crashes.current &&
        fsWatch.changed().length > 0;
      let resetFailure = resetFirst
        ? reset(() => {
          resetInterpreter();
          tainted ||= !restoreChangedFiles();
        })
        : undefined;
      running = false;
      streaming = undefined;
      const outcome = readOutcome(json);
      outcome.files = files;
      if (omitted > 0) outcome.files_omitted = omitted;
      outcome.figures ??= [];
      outcome.truncated = stdout.truncated || stderr.truncated;
      outcome.stdout = stdout.take();
      outcome.stderr = stderr.take();
      if (crashes.current) {
        // How the interpreter ended is the answer, whatever stopped it meanwhile.
      } else if (closedFor === InterruptReason.OutputLimit) outcome.status = "output_limit";
      else if (closedFor === InterruptReason.MemoryLimit) outcome.status = "memory_limit";
      else if (outcome.status !== "ok" && closedFor === InterruptReason.Timeout) {
        outcome.status = "timeout";
      } else if (outcome.status !== "ok" && closedFor === InterruptReason.Cancelled) {
        outcome.status = "cancelled";
      } else if (outcome.error?.type === "MemoryError") outcome.status = "memory_limit";
      else if (outcome.status === "error" && fsFull) outcome.status = "fs_limit";
      send({
        type: "done",
        seq: message.seq,
        outcome,
        heapBytes: heapBytes(),
        tainted,
      });
      if (init.failpoints && failsAfterAnswer(JSON.parse(message.request).code)) {
        throw new Error("failpoint: the interpreter failed after its answer");
      }
      const resetStarted = performance.now();
      let kind: ResetKind = "python";
      // What the run queued (a thenable's `then`, say) runs in its own generation, and the
      // reset may set off a destructor: either may crash the interpreter too.
      if (imaged && !crashes.current) await imaged.handles.drain();
      // A crash is recovered from below, instead of a reset.
      if (!crashes.current && imaged) {
        // A change the Python-level reset cannot undo stays with its owner: the image is put
        // back before anyone else's request.
        kind = tenancy.leave(() =>
          reset(() => {
            resetInterpreter();
            restoreChangedFiles();
          })
        );
      } else if (!crashes.current && !resetFirst) resetFailure = reset(resetInterpreter);
      const crash = crashes.current;
      if (crash) {
        resetFailure = recover(crash);
        kind = resetFailure === undefined ? "image" : "none";
      }
      const recovered = crash && resetFailure === undefined ? crash.kind : undefined;
      settle(message.seq, entered, kind, performance.now() - resetStarted, recovered);
      // A reset that failed leaves an interpreter that no request may use; the answer above
      // is the request's own all the same.
      if (resetFailure !== undefined) breakDown(resetFailure);
    },
    async call({ seq, fn, arg }) {
      if (broken || !recoveredBetweenRuns()) return;
      // With the memory image, a session is its image, not a namespace to pickle.
      if (tenancy.mode !== "none") {
        const value = fn === "drop_session"
          ? tenancy.dropSession(arg!)
          : fn === "export_sessions"
          ? await tenancy.exportSessions(init.maxExportBytes)
          : await tenancy.importSessions(JSON.parse(arg!));
        send({ type: "returned", seq, value: JSON.stringify(value) });
        return;
      }
      try {
        const value = arg === undefined ? functions[fn]() : functions[fn](arg);
        send({ type: "returned", seq, value: String(value) });
      } catch (error) {
        // Pickling a session runs its objects' own Python (`__reduce__`), which may end the
        // interpreter: the call fails, and the interpreter is replaced.
        const crash = crashes.current;
        if (crash) {
          const failure = `the interpreter ${crash.kind}: ${crash.reason}`;
          send({ type: "returned", seq, value: "", error: failure });
          recoveredBetweenRuns();
          return;
        }
        if (!(error instanceof PythonError)) throw error;
        send({ type: "returned", seq, value: "", error: `${error.type}: ${error.message}` });
      }
    },
    cancelAwait() {
      // This handler runs only while the thread is free: a run still active is waiting in
      // `await`. Its interrupt would fire inside the runtime's own code, so take it back and
      // cancel the run's task instead.
      if (!running) return;
      Atomics.store(control, ControlSlot.Interrupt, 0);
      try {
        cancelCurrent();
      } catch (error) {
        // The cancel ran the code's own Python (a future's `cancel`), which may end the
        // interpreter: the run, racing its task against the crash, answers and recovers.
        if (!crashes.current) throw error;
      }
    },
  };
}

let thread: Thread | undefined;

async function handle(message: ToThread): Promise<void> {
  try {
    switch (message.type) {
      case "init":
        installStoppableClock();
        // The image made as the worker starts must be the same in every worker.
        thread = await withClockStopped(() => start(message));
        break;
      case "run":
        await thread!.run(message);
        break;
      case "call":
        await thread!.call(message);
        break;
      case "cancel_await":
        thread?.cancelAwait();
        break;
    }
  } catch (error) {
    send({
      type: "fatal",
      message: error instanceof Error ? error.stack ?? error.message : String(error),
    });
  }
}
