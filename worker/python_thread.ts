/**
 * The Web Worker that owns Pyodide. It loads the interpreter once, then runs one request at a
 * time. Running off the main thread lets `worker_server.ts` interrupt Python through the
 * shared control buffer and keep answering while Python runs.
 *
 * @module
 */

/// <reference lib="deno.worker" />

import type { PyProxy } from "pyodide/ffi";
import { bootInterpreter, type Interpreter } from "./interpreter.ts";
import {
  ControlSlot,
  type FromThread,
  type InitMessage,
  InterruptReason,
  type RunMessage,
  type RunOutcome,
  SIGINT,
  type ToThread,
} from "./messages.ts";

/** Collects one stream's output up to a byte cap; past it, asks Python to stop. */
class OutputCapture {
  #chunks: string[] = [];
  #bytes = 0;
  #decoder = new TextDecoder();
  truncated = false;

  constructor(private readonly maxBytes: number, private readonly onLimit: () => void) {}

  write = (buffer: Uint8Array): number => {
    if (this.truncated) return buffer.length;
    const room = this.maxBytes - this.#bytes;
    if (buffer.length > room) {
      this.#chunks.push(this.#decoder.decode(buffer.subarray(0, room), { stream: true }));
      this.#bytes = this.maxBytes;
      this.truncated = true;
      this.onLimit();
    } else {
      this.#chunks.push(this.#decoder.decode(buffer, { stream: true }));
      this.#bytes += buffer.length;
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

const send = (message: FromThread) => self.postMessage(message);

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

/** Restores from the snapshot when there is one; falls back to a plain start if that fails. */
async function boot(snapshotPath: string | undefined): Promise<Interpreter> {
  if (snapshotPath) {
    try {
      return await bootInterpreter({ snapshot: await Deno.readFile(snapshotPath) });
    } catch (error) {
      console.error(`snapshot restore failed, starting from scratch: ${error}`);
    }
  }
  return await bootInterpreter();
}

async function start(init: InitMessage): Promise<(run: RunMessage) => Promise<void>> {
  const started = performance.now();
  const control = new Int32Array(init.control);
  const interrupt = new Int32Array(init.control, ControlSlot.Interrupt * 4, 1);
  const stopFor = (reason: number) => {
    Atomics.store(control, ControlSlot.Reason, reason);
    Atomics.store(control, ControlSlot.Interrupt, SIGINT);
  };
  const stdout = new OutputCapture(init.maxOutputBytes, () => stopFor(InterruptReason.OutputLimit));
  const stderr = new OutputCapture(init.maxOutputBytes, () => stopFor(InterruptReason.OutputLimit));

  capHeapGrowth(init.maxHeapBytes);
  const { pyodide, runtime, restored } = await boot(init.snapshotPath);
  pyodide.setStdout({ write: stdout.write, isatty: false });
  pyodide.setStderr({ write: stderr.write, isatty: false });
  pyodide.setStdin({ error: true });
  pyodide.setInterruptBuffer(interrupt);

  // Attribute proxies are borrowed from the module's: copies outlive it.
  const install = runtime.install.copy() as PyProxy & ((...a: unknown[]) => void);
  const runPython = runtime.run.copy() as PyProxy & ((code: string, stdin: string) => unknown);
  // Blocks on the interrupt slot so that a timeout wakes a sleeping request at once.
  const waitMs = (ms: number) => {
    Atomics.wait(interrupt, 0, 0, ms);
    pyodide.checkInterrupt();
  };
  install(waitMs, init.maxOutputBytes);
  install.destroy();
  runtime.destroy();

  // The Wasm heap only grows; its size is what a worker costs. Pyodide has no public getter.
  const wasm = (pyodide as unknown as { _module: { HEAP8: Int8Array } })._module;
  const heapBytes = () => wasm.HEAP8.length;
  send({
    type: "ready",
    pyodideVersion: pyodide.version,
    pythonVersion: pyodide.runPython("import sys; sys.version.split()[0]") as string,
    loadMs: performance.now() - started,
    restored,
    heapBytes: heapBytes(),
  });

  const { PythonError } = pyodide.ffi;
  /** Runs the code; a Python exception that escapes the runtime itself is still a result. */
  const runToJson = async (code: string, stdin: string): Promise<string> => {
    try {
      const json = runPython(code, stdin);
      if (typeof json === "string") return json;
      const coroutine = json as PyProxy & Promise<string>;
      try {
        return await coroutine;
      } finally {
        coroutine.destroy();
      }
    } catch (error) {
      // Anything else (a JavaScript error, a Pyodide fatal error) breaks the worker.
      if (!(error instanceof PythonError)) throw error;
      return JSON.stringify({
        status: "error",
        result: null,
        error: { type: error.type, message: "", traceback: error.message },
      });
    }
  };

  return async ({ seq, code, stdin }) => {
    Atomics.store(control, ControlSlot.Reason, InterruptReason.None);
    const json = await runToJson(code, stdin);
    // A signal that arrived after Python's last check must not hit the next request.
    Atomics.store(control, ControlSlot.Interrupt, 0);
    const fromPython = JSON.parse(json) as Pick<
      RunOutcome,
      "status" | "result" | "error"
    >;
    const outcome: RunOutcome = {
      ...fromPython,
      truncated: stdout.truncated || stderr.truncated,
      stdout: stdout.take(),
      stderr: stderr.take(),
    };
    const reason = Atomics.load(control, ControlSlot.Reason);
    if (reason === InterruptReason.OutputLimit) outcome.status = "output_limit";
    else if (outcome.status !== "ok" && reason === InterruptReason.Timeout) {
      outcome.status = "timeout";
    } else if (outcome.status !== "ok" && reason === InterruptReason.Cancelled) {
      outcome.status = "cancelled";
    } else if (outcome.error?.type === "MemoryError") outcome.status = "memory_limit";
    send({ type: "done", seq, outcome, heapBytes: heapBytes() });
  };
}

let run: ((message: RunMessage) => Promise<void>) | undefined;

self.onmessage = async (event: MessageEvent<ToThread>) => {
  const message = event.data;
  try {
    if (message.type === "init") run = await start(message);
    else await run!(message);
  } catch (error) {
    send({
      type: "fatal",
      message: error instanceof Error ? error.stack ?? error.message : String(error),
    });
  }
};
