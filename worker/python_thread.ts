/**
 * The Python thread: the Web Worker that owns Pyodide. It loads the interpreter once, then runs
 * one request at a time (`RequestRunner`). Running off the main thread lets `worker_server.ts` interrupt Python
 * through the shared control buffer and keep answering while Python runs.
 *
 * @module
 */

/// <reference lib="deno.worker" />

import { FsQuota, limitNames } from "./fs_quota.ts";
import { FsWatch } from "./fs_watch.ts";
import { capHeapGrowth } from "./heap_cap.ts";
import { protectContents } from "./image/fs_image.ts";
import { PythonHandles } from "./image/python_handles.ts";
import { CrashWatch, isFatal } from "./crash.ts";
import { bootInterpreter, type Interpreter } from "./interpreter.ts";
import { emscriptenOf, internalApiOf } from "./pyodide_internals.ts";
import { installStoppableClock, withClockStopped } from "./stopped_clock.ts";
import { OutputStreams } from "./output_capture.ts";
import { RequestRunner } from "./request_runner.ts";
import { RunFiles } from "./run_files.ts";
import { ThreadRunPhase } from "./run_phase.ts";
import { bindRuntime } from "./runtime_contract.ts";
import {
  freezeShared,
  guardWasmLoading,
  hardenThread,
  hideHostPathsInStacks,
  isolatedFunction,
  pythonGlobals,
} from "./sandbox.ts";
import { guardSignalBuffer } from "./signal_guard.ts";
import { type FromThread, type InitMessage, InterruptReason, type ToThread } from "./messages.ts";
import { acceptChannel } from "./thread_channel.ts";
import { Tenancy } from "./tenancy.ts";

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

/** Boots the interpreter, seals it for requests, and says it is ready. */
async function start(init: InitMessage): Promise<RequestRunner> {
  const started = performance.now();
  capHeapGrowth(init.maxHeapBytes);
  // Made once the worker is sealed, in the image modes.
  let handles: PythonHandles | undefined;
  const jsglobals = pythonGlobals(init.allowNetwork, () => handles?.signal);
  const { pyodide, runtime: runtimeModule, restored } = await boot(init, jsglobals);
  // Pyodide's type asks for a buffer; `undefined` takes it back.
  const phase = new ThreadRunPhase(
    init.control,
    (buffer) => pyodide.setInterruptBuffer(buffer as Int32Array),
  );
  const output = new OutputStreams(
    init.maxOutputBytes,
    () => phase.stopFor(InterruptReason.OutputLimit),
    send,
  );
  pyodide.setStdout({ write: output.stdout.write, isatty: false });
  pyodide.setStderr({ write: output.stderr.write, isatty: false });
  pyodide.setStdin({ error: true });
  const emscripten = emscriptenOf(pyodide);
  const crashes = new CrashWatch({ api: internalApiOf(pyodide), module: emscripten });
  guardSignalBuffer(emscripten);

  const runtime = bindRuntime(runtimeModule);
  // Blocks on the interrupt slot so that a timeout wakes a sleeping request at once.
  const waitMs = isolatedFunction((ms: number) => {
    phase.sleep(ms);
    pyodide.checkInterrupt();
  });
  // With the memory image, `random` is reseeded by every run that starts from it instead: the
  // image itself must be the same in every worker, so that sessions can move between them.
  runtime.install(
    waitMs,
    isolatedFunction(() => phase.close()),
    isolatedFunction((delta: number) => phase.inCallbacks(delta)),
    init.maxOutputBytes,
    init.isolation === "none",
  );
  runtime.install.destroy();
  runtimeModule.destroy();
  hardenThread(pyodide, init.allowNetwork);
  runtime.seal();
  runtime.seal.destroy();
  const fsWatch = new FsWatch(pyodide.FS);
  const runFiles = new RunFiles(pyodide.FS, init.maxFileBytes, init.maxReturnedFileBytes);
  fsWatch.mark(runtime.watchedPaths());

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
  return new RequestRunner({
    init,
    send,
    pyodide,
    runtime,
    phase,
    output,
    crashes,
    fsWatch,
    runFiles,
    fsQuota,
    tenancy,
    imaged,
    loadingPackages,
    heapBytes,
  });
}

let thread: RequestRunner | undefined;

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
