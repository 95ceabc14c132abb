/**
 * Runs requests in the Python thread's interpreter, one at a time: each in its owner's state,
 * its code between the opening and the closing of the run, its answer sent at once, its
 * after-work (the reset, or the recovery from a crash) done before the next. Also the session
 * calls between runs, and the cancel of a run that awaits.
 *
 * @module
 */

import type { PyodideAPI } from "pyodide";
import type { OutputFile } from "../lib/protocol.ts";
import type { Crash, CrashWatch } from "./crash.ts";
import { failsAfterAnswer } from "./failpoints.ts";
import type { FsQuota } from "./fs_quota.ts";
import type { FsWatch } from "./fs_watch.ts";
import type { ImagedInterpreter } from "./image/interpreter_image.ts";
import type {
  CallMessage,
  FromThread,
  InitMessage,
  ReturnedMessage,
  RunMessage,
} from "./messages.ts";
import {
  type CodeEnd,
  crashEnd,
  errorEnd,
  type RunOutcome,
  sessionOutcome,
  statusOf,
  stoppedBeforeStart,
  unreportedEnd,
} from "./outcome.ts";
import type { OutputStreams } from "./output_capture.ts";
import type { GivenFiles, RunFiles } from "./run_files.ts";
import type { ThreadRunPhase } from "./run_phase.ts";
import { parseRuntimeReport, type Runtime } from "./runtime_contract.ts";
import { withClockStopped } from "./stopped_clock.ts";
import {
  type EnterReport,
  type ResetKind,
  SessionLostError,
  SessionRefusedError,
  type Tenancy,
} from "./tenancy.ts";

/** What the runner works with: the booted interpreter and the thread's parts around it. */
export interface RunnerParts {
  init: Pick<InitMessage, "failpoints" | "maxExportBytes">;
  send: (message: FromThread) => void;
  pyodide: PyodideAPI;
  runtime: Runtime;
  phase: ThreadRunPhase;
  output: OutputStreams;
  crashes: CrashWatch;
  fsWatch: FsWatch;
  runFiles: RunFiles;
  fsQuota: FsQuota;
  tenancy: Tenancy;
  /** The memory image's parts (`--isolation` request or tenant); none with `none`. */
  imaged: ImagedInterpreter | undefined;
  /** Runs package loading, when Wasm code may import the interpreter's memory (sandbox.ts). */
  loadingPackages: <T>(work: () => Promise<T>) => Promise<T>;
  /** The Wasm heap's size: it only grows, and is what a worker costs. */
  heapBytes: () => number;
}

/** A run whose code ended: how, and what the thread saw of it. */
interface Ran {
  end: CodeEnd;
  /** The files the code wrote, and how many were left out (see `RunFiles.collect`). */
  files: OutputFile[];
  omitted: number;
  /** A write was refused for want of room while the run was open. */
  fsFull: boolean;
}

/** The reset done before the answer (`--isolation none`), if it was. */
interface EarlyReset {
  done: boolean;
  /** What failed, if it did. */
  failure?: string;
}

export class RequestRunner {
  readonly #parts: RunnerParts;
  /** A run is between its start and its answer (`cancelAwait` acts only then). */
  #running = false;
  /** Set once a request changed a file the reset cannot restore; the worker is then replaced. */
  #tainted = false;
  /** Set once the interpreter's reset failed: no request may run here again (see `#reset`). */
  #broken = false;

  constructor(parts: RunnerParts) {
    this.#parts = parts;
  }

  /**
   * Runs one request, in this order:
   * 1. a crash that came between runs is recovered from; a broken interpreter takes no run;
   * 2. the interpreter takes up the owner's state (tenancy.ts): a session gone, or another
   *    tenant's, is the answer;
   * 3. packages load, before the run opens (their Python steps are the runtime's own);
   * 4. the run opens, and Python takes interrupts, unless a stop came before: that stop is
   *    the answer, and the code does not start;
   * 5. the files are written, the code runs (the runtime closes the run as it reports), the
   *    files it wrote are read back;
   * 6. with `--isolation none`, a request that changed files is reset now: its answer then
   *    says whether the worker is tainted;
   * 7. the answer goes out;
   * 8. the after-work (the reset, or the recovery from a crash) runs after the answer, off
   *    the request's path, and before the next request: this handler ends with it.
   */
  async run(message: RunMessage): Promise<void> {
    // The main thread posts it again to the interpreter that replaces this one.
    if (this.#broken || !this.#recoveredBetweenRuns()) return;
    const entered = this.#enterOwner(message);
    if (entered === undefined) return;
    // A stop that comes while packages load marks the phase, so that the code does not start.
    const packageError = await this.#loadPackages(message.packages);
    const stoppedBefore = this.#parts.phase.open();
    if (stoppedBefore !== undefined) {
      this.#answer(message.seq, stoppedBeforeStart(stoppedBefore));
      this.#settle(message.seq, entered, "none", 0);
      return;
    }
    const ran = await this.#runOpened(message, entered.fresh, packageError);
    const early = this.#resetBeforeAnswer();
    this.#running = false;
    this.#parts.output.end();
    this.#answer(message.seq, this.#outcomeOf(ran));
    if (this.#parts.init.failpoints && failsAfterAnswer(message.request.code)) {
      throw new Error("failpoint: the interpreter failed after its answer");
    }
    await this.#afterWork(message.seq, entered, early);
  }

  /** Calls a session function, or renews the interpreter, between runs; posts what it returned. */
  async call({ seq, fn, arg }: CallMessage): Promise<void> {
    const { tenancy, crashes } = this.#parts;
    // What the call dropped goes with its answer: the worker may leave before its next run.
    const send = (message: ReturnedMessage) =>
      this.#parts.send({ ...message, lost: tenancy.takeDropped() });
    if (this.#broken || !this.#recoveredBetweenRuns()) return;
    if (fn === "renew") {
      // Without the memory image there is nothing to renew from: the supervisor replaces the
      // process of a worker of `--isolation none` instead.
      if (tenancy.mode === "none") {
        send({ type: "returned", seq, value: "", error: "no memory image (--isolation none)" });
        return;
      }
      const started = performance.now();
      tenancy.renew();
      send({ type: "returned", seq, value: String(performance.now() - started) });
      return;
    }
    // With the memory image, a session is its image, not a namespace to pickle.
    if (tenancy.mode !== "none") {
      const value = fn === "drop_session"
        ? tenancy.dropSession(arg!)
        : fn === "export_sessions"
        ? await tenancy.exportSessions(this.#parts.init.maxExportBytes)
        : await tenancy.importSessions(JSON.parse(arg!));
      send({ type: "returned", seq, value: JSON.stringify(value) });
      return;
    }
    const call = this.#parts.runtime.sessions[fn];
    try {
      const value = arg === undefined ? call() : call(arg);
      send({ type: "returned", seq, value: String(value) });
    } catch (error) {
      // Pickling a session runs its objects' own Python (`__reduce__`), which may end the
      // interpreter: the call fails, and the interpreter is replaced.
      const crash = crashes.current;
      if (crash) {
        const failure = `the interpreter ${crash.kind}: ${crash.reason}`;
        send({ type: "returned", seq, value: "", error: failure });
        this.#recoveredBetweenRuns();
        return;
      }
      if (!(error instanceof this.#parts.pyodide.ffi.PythonError)) throw error;
      send({ type: "returned", seq, value: "", error: `${error.type}: ${error.message}` });
    }
  }

  /**
   * Cancels a run that awaits in top-level `await`. This handler runs only while the thread is
   * free: a run still active is waiting in `await`. Its interrupt would fire inside the
   * runtime's own code, so take it back and cancel the run's task instead.
   */
  cancelAwait(): void {
    if (!this.#running) return;
    this.#parts.phase.withdrawInterrupt();
    try {
      this.#parts.runtime.cancelCurrent();
    } catch (error) {
      // The cancel ran the code's own Python (a future's `cancel`), which may end the
      // interpreter: the run, racing its task against the crash, answers and recovers.
      if (!this.#parts.crashes.current) throw error;
    }
  }

  /** Takes up the owner's state; undefined if the session is gone or refused (answered). */
  #enterOwner(message: RunMessage): EnterReport | undefined {
    try {
      return this.#parts.tenancy.enter(message.owner);
    } catch (error) {
      const lost = error instanceof SessionLostError;
      if (!lost && !(error instanceof SessionRefusedError)) throw error;
      this.#answer(
        message.seq,
        lost
          ? sessionOutcome("session_lost", error.name, error.reason)
          : sessionOutcome("session_refused", error.name, error.message),
      );
      this.#settle(message.seq, { fresh: false }, "none", 0);
      return undefined;
    }
  }

  /**
   * Loads what is not loaded yet; loadPackage reports failures instead of throwing. Pyodide's
   * loader is Python the request's owner may have patched (in its session), so the loading may
   * end the interpreter: the crash is then the answer, recovered from like the run's.
   */
  async #loadPackages(names: string[]): Promise<CodeEnd | undefined> {
    const { pyodide, crashes, runtime, fsWatch, tenancy, fsQuota } = this.#parts;
    const missing = names.filter((name) => !(name in pyodide.loadedPackages));
    if (missing.length === 0) return undefined;
    const messages: string[] = [];
    try {
      // With the clock stopped, every worker that loads the same packages gets the same image.
      await withClockStopped(() =>
        this.#parts.loadingPackages(() =>
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
    if (crashes.current) return crashEnd(crashes.current);
    await withClockStopped(() => {
      runtime.acceptInstalled();
      fsWatch.mark(runtime.watchedPaths());
      tenancy.packagesLoaded();
      fsQuota.rebase();
    });
    const failed = missing.filter((name) => !(name in pyodide.loadedPackages));
    if (failed.length === 0) return undefined;
    return errorEnd(
      "PackageLoadError",
      `could not load ${failed.join(", ")}: ${messages.join(" ") || "unknown error"}`,
    );
  }

  /**
   * The run, once open: its output starts, its files are written and its code runs (unless
   * its packages failed), then the run closes and the files the code wrote are read back.
   */
  async #runOpened(
    message: RunMessage,
    reseed: boolean,
    packageError: CodeEnd | undefined,
  ): Promise<Ran> {
    const { output, tenancy, fsQuota, phase, runFiles } = this.#parts;
    output.begin(message.seq, message.stream);
    this.#running = true;
    tenancy.ran();
    const given: GivenFiles = new Map();
    fsQuota.open();
    const end = packageError ?? await this.#runCode(message, given, reseed);
    // The runtime closed the run already, unless it failed before it could.
    phase.close();
    const fsFull = fsQuota.close();
    return { end, fsFull, ...runFiles.collect(given) };
  }

  /** Runs the request; a Python exception that escapes the runtime itself is still a result. */
  async #runCode(message: RunMessage, given: GivenFiles, reseed: boolean): Promise<CodeEnd> {
    const { runFiles, runtime, crashes } = this.#parts;
    const { PyAwaitable, PyProxy, PythonError } = this.#parts.pyodide.ffi;
    try {
      runFiles.put(message.files, given);
    } catch (error) {
      // The file system reset removes what was written.
      return errorEnd("FileError", (error as Error).message);
    }
    try {
      const json = runtime.run(message.request, reseed);
      if (typeof json === "string") return this.#readReport(json);
      // Neither a report nor a task: what a `json.dumps` the code replaced returned.
      if (!(json instanceof PyAwaitable)) {
        if (json instanceof PyProxy) json.destroy();
        return unreportedEnd();
      }
      const task = json;
      // A crash in an event-loop callback leaves the task pending for good.
      const done = await Promise.race([task, crashes.happened]);
      if (crashes.current) return crashEnd(crashes.current);
      task.destroy();
      return this.#readReport(done as string);
    } catch (error) {
      if (crashes.current) return crashEnd(crashes.current);
      // Anything else (a JavaScript error of the runtime's own) breaks the worker.
      if (!(error instanceof PythonError)) throw error;
      return errorEnd(error.type, "", error.message);
    }
  }

  /**
   * The runtime's report. The request may have patched what the runtime reports with (say
   * `json.dumps`; the reset undoes it after the report): a report that is not what the
   * runtime writes becomes an error result of that request, not a broken worker.
   */
  #readReport(json: string): CodeEnd {
    return parseRuntimeReport(json) ?? unreportedEnd();
  }

  /**
   * Without the memory image (`--isolation none`), a request that changed files (its run
   * directory's included) is reset before its answer, which then says whether the worker is
   * tainted. The interpreter's reset comes before the files' (the file reset calls os and
   * shutil, which the request may have patched).
   */
  #resetBeforeAnswer(): EarlyReset {
    const { tenancy, crashes, fsWatch, runtime } = this.#parts;
    if (tenancy.mode !== "none" || crashes.current || fsWatch.changed().length === 0) {
      return { done: false };
    }
    const failure = this.#reset(() => {
      runtime.reset();
      this.#tainted ||= !this.#restoreChangedFiles();
    });
    return { done: true, failure };
  }

  /** The answer: how the code ended, with what the thread saw, and the status that wins. */
  #outcomeOf({ end, files, omitted, fsFull }: Ran): RunOutcome {
    const { output, crashes, phase } = this.#parts;
    const { truncated, stdout, stderr } = output.take();
    const seen = { crashed: crashes.current !== undefined, closedFor: phase.closedFor, fsFull };
    return {
      ...end,
      files,
      ...(omitted > 0 ? { files_omitted: omitted } : {}),
      figures: end.figures ?? [],
      truncated,
      stdout,
      stderr,
      status: statusOf(end, seen),
    };
  }

  #answer(seq: number, outcome: RunOutcome): void {
    const heapBytes = this.#parts.heapBytes();
    this.#parts.send({ type: "done", seq, outcome, heapBytes, tainted: this.#tainted });
  }

  /**
   * After the answer: the reset (the image put back, or the Python-level reset), or the
   * recovery from a crash; then `settled`, with what it cost.
   */
  async #afterWork(seq: number, entered: EnterReport, early: EarlyReset): Promise<void> {
    const { imaged, crashes, tenancy, runtime } = this.#parts;
    const resetStarted = performance.now();
    let kind: ResetKind = "python";
    let resetFailure = early.failure;
    // What the run queued (a thenable's `then`, say) runs in its own generation, and the
    // reset may set off a destructor: either may crash the interpreter too.
    if (imaged && !crashes.current) await imaged.handles.drain();
    // A crash is recovered from below, instead of a reset.
    if (!crashes.current && imaged) {
      // A change the Python-level reset cannot undo stays with its owner: the image is put
      // back before anyone else's request.
      kind = tenancy.leave(() =>
        this.#reset(() => {
          runtime.reset();
          this.#restoreChangedFiles();
        })
      );
    } else if (!crashes.current && !early.done) resetFailure = this.#reset(() => runtime.reset());
    const crash = crashes.current;
    if (crash) {
      resetFailure = this.#recover(crash);
      kind = resetFailure === undefined ? "image" : "none";
    }
    const recovered = crash && resetFailure === undefined ? crash.kind : undefined;
    this.#settle(seq, entered, kind, performance.now() - resetStarted, recovered);
    // A reset that failed leaves an interpreter that no request may use; the answer above
    // is the request's own all the same.
    if (resetFailure !== undefined) this.#breakDown(resetFailure);
  }

  /** Runs reset steps; what a failure says, if they fail with a Python exception. */
  #reset(steps: () => void): string | undefined {
    try {
      steps();
    } catch (error) {
      // A crash (a destructor the reset set off may end the interpreter) is recovered from by
      // the caller; anything else but a Python exception is a broken runtime: the process ends
      // (see `fatal`).
      const crash = this.#parts.crashes.current;
      if (crash) return `the isolation reset crashed: ${crash.reason}`;
      if (!(error instanceof this.#parts.pyodide.ffi.PythonError)) throw error;
      // The message is the whole traceback; its last line names the error.
      return `the isolation reset failed: ${error.message.trim().split("\n").at(-1)}`;
    }
  }

  /**
   * Undoes the file system changes of the request that just ran (the Python-level reset's last
   * part); false if some change cannot be undone.
   */
  #restoreChangedFiles(): boolean {
    const { fsWatch, runtime } = this.#parts;
    const changed = fsWatch.changed();
    if (changed.length === 0) return true;
    let clean: boolean;
    try {
      clean = runtime.restoreFiles(changed);
    } catch (error) {
      // The reset itself failed (a file it cannot write, say).
      if (!(error instanceof this.#parts.pyodide.ffi.PythonError)) throw error;
      clean = false;
    }
    fsWatch.mark(runtime.watchedPaths());
    return clean;
  }

  /**
   * After a crash: the image is put back (a session whose state was live is lost), and checked
   * by a run of Python. What failed, if the interpreter must be replaced instead (there is no
   * image with `--isolation none`).
   */
  #recover(crash: Crash): string | undefined {
    const failure = `the interpreter ${crash.kind}: ${crash.reason}`;
    if (!this.#parts.imaged) return failure;
    this.#parts.tenancy.recover(`was lost: the interpreter ${crash.kind} (${crash.reason})`);
    this.#parts.crashes.recovered();
    try {
      this.#parts.pyodide.runPython("0");
    } catch {
      return `${failure}; the image put back did not run`;
    }
  }

  /** Recovers from a crash that came between runs (an event-loop callback's); false if broken. */
  #recoveredBetweenRuns(): boolean {
    const current = this.#parts.crashes.current;
    const failure = current && this.#recover(current);
    if (failure === undefined) return true;
    this.#breakDown(failure);
    return false;
  }

  /** No request may run here again: the main thread replaces this interpreter. */
  #breakDown(why: string): void {
    this.#broken = true;
    this.#parts.send({ type: "broken", message: why });
  }

  /** Tells the main thread that the run's after-work is done, with what it cost. */
  #settle(
    seq: number,
    entered: EnterReport,
    reset: ResetKind,
    resetMs: number,
    recovered?: Crash["kind"],
  ): void {
    const { tenancy, fsQuota } = this.#parts;
    this.#parts.send({
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
  }
}
