/**
 * A fatal error of the interpreter, caught as it happens so that the worker can put its memory
 * image back and live on, instead of ending its process.
 *
 * Python can end the interpreter in many ways: a Wasm trap (an out-of-bounds read through
 * ctypes), `abort()` (`os.abort`, a fatal signal raised at itself, libc's own checks), `exit`
 * (`os._exit`, `os.kill(os.getpid(), 9)`), a stack overflow (V8's `RangeError`: this build has
 * no stack check of its own). Each reaches JavaScript as an exception that crosses the Wasm
 * frames, and Pyodide hands it to `API.fatal_error`, which would make every later call of its
 * API throw, and ignore a second fatal error silently. So that function is replaced: it records
 * the crash and rethrows, marked as fatal, so that Pyodide unwinds every frame without catching
 * it. And `abort()` calls `Module.onAbort` before it sets its closure's `ABORT` flag, which
 * nothing could clear: a throw there stops it first.
 *
 * Nothing may call into Wasm between the crash and the restore of the image: the memory is in
 * whatever state the crash left.
 *
 * @module
 */

import type { EmscriptenModule, InternalApi } from "./pyodide_internals.ts";

/** How the interpreter ended. */
export interface Crash {
  /** `exited`: the code called `exit` (its status is `exitCode`); `crashed`: anything else. */
  kind: "exited" | "crashed";
  exitCode?: number;
  /** What happened, for a person. */
  reason: string;
}

/** What `abort()` throws instead of going on to set `ABORT`. */
class AbortError extends Error {
  override name = "AbortError";
}

/** The parts of Pyodide's internal API and module used here (see pyodide_internals.ts). */
interface FatalHooks {
  api: InternalApi;
  module: Pick<EmscriptenModule, "onAbort">;
}

/** What a fatal error was, from the exception that carried it. */
function classify(error: unknown): Crash {
  const { name, message, status } = error as { name?: string; message?: string; status?: number };
  if (name === "ExitStatus" || name === "Exit") {
    // As a process reports it: the low 8 bits.
    const code = (status ?? 0) & 0xff;
    return { kind: "exited", exitCode: code, reason: `exit(${status ?? 0})` };
  }
  if (name === "AbortError") {
    return { kind: "crashed", reason: `abort() (${message || "no reason given"})` };
  }
  if (name === "RangeError") return { kind: "crashed", reason: "stack overflow" };
  if (error instanceof WebAssembly.RuntimeError) {
    return { kind: "crashed", reason: `Wasm trap: ${message}` };
  }
  return { kind: "crashed", reason: `${name ?? typeof error}: ${message ?? describe(error)}` };
}

/** `String(value)`, which a value's own `toString` may make throw. */
function describe(value: unknown): string {
  try {
    return String(value);
  } catch {
    return `a ${typeof value} that cannot be printed`;
  }
}

export class CrashWatch {
  #current: Crash | undefined;
  #happened = Promise.withResolvers<Crash>();

  /** Installs the hooks; call once Pyodide has booted, before any user code runs. */
  constructor({ api, module }: FatalHooks) {
    // Fixed for good: Pyodide's own setup, which Python can call again through ctypes
    // (`pyodide_js_init`), would put its own handler back.
    const fixed = (target: object, key: string, value: unknown) =>
      Object.defineProperty(target, key, { value, writable: false, configurable: false });
    fixed(module, "onAbort", (what: unknown) => {
      throw new AbortError(String(what ?? ""));
    });
    fixed(api, "fatal_error", (error: unknown): never => {
      // Marked, so that Pyodide's frames let it through: a value that cannot take the mark
      // (not an object, or one frozen) is carried by an Error that can.
      const fatal = (typeof error === "object" && error !== null && Object.isExtensible(error)
        ? error
        : new Error(describe(error), { cause: error })) as { pyodide_fatal_error?: boolean };
      if (!fatal.pyodide_fatal_error) {
        fatal.pyodide_fatal_error = true;
        this.#current ??= classify(fatal);
        this.#happened.resolve(this.#current);
      }
      throw fatal;
    });
  }

  /** The crash not yet recovered from, if there is one. */
  get current(): Crash | undefined {
    return this.#current;
  }

  /** Resolves at the next crash: a run that awaits races its task against it. */
  get happened(): Promise<Crash> {
    return this.#happened.promise;
  }

  /** The interpreter was put back (or replaced): the crash is over. */
  recovered(): void {
    this.#current = undefined;
    this.#happened = Promise.withResolvers<Crash>();
  }
}

/** Whether `error` is one that Pyodide treats as fatal (it unwinds every frame). */
export function isFatal(error: unknown): boolean {
  return (error as { pyodide_fatal_error?: boolean } | null)?.pyodide_fatal_error === true;
}
