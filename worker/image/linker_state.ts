/**
 * The dynamic linker's state that lives in JavaScript (Emscripten's `LDSO`, Pyodide 314.0.7):
 * the libraries loaded, by name and by handle, each one's flags, and the symbols that loading
 * merged into the main module's imports.
 *
 * Python reaches the linker's imports through ctypes, and none of this is in the Wasm memory:
 * `CDLL(None)._dlopen_js(0)` replaced the main module's entry (handle 0), after which every
 * `CDLL(None)` lookup failed on that worker, for every later tenant; a load that fails leaves
 * its library marked "loading" for good. So the state is taken with an image and put back
 * with it.
 *
 * @module
 */

/** A loaded library, as the linker records it (only these fields change after it loads). */
interface Dso {
  refcount: number;
  global: boolean;
  /** Its symbols, or "loading" while it loads. */
  exports: Record<string, unknown> | string;
}

/** The part of Pyodide's Emscripten module used here. */
export interface LinkerModule {
  LDSO: {
    loadedLibsByName: Record<string, Dso>;
    loadedLibsByHandle: Record<number, Dso>;
  };
}

/** The main module's entry, whose symbols are the imports that every library links against. */
const MAIN = "__main__";

export class LinkerState {
  readonly #byName: Record<string, Dso>;
  readonly #byHandle: Record<number, Dso>;
  readonly #flags: { dso: Dso; refcount: number; global: boolean; exports: Dso["exports"] }[];
  /** The main module's imports object, which loading extends. */
  readonly #imports: Record<string, unknown>;
  readonly #importsTaken: Record<string, unknown>;

  private constructor(private readonly module: LinkerModule) {
    const { loadedLibsByName, loadedLibsByHandle } = module.LDSO;
    this.#byName = { ...loadedLibsByName };
    this.#byHandle = { ...loadedLibsByHandle };
    this.#flags = [...new Set([...Object.values(this.#byName), ...Object.values(this.#byHandle)])]
      .map((dso) => ({ dso, refcount: dso.refcount, global: dso.global, exports: dso.exports }));
    this.#imports = loadedLibsByName[MAIN].exports as Record<string, unknown>;
    this.#importsTaken = { ...this.#imports };
  }

  static take(module: LinkerModule): LinkerState {
    return new LinkerState(module);
  }

  /** Whether the linker is as this state has it (cheap: no library loads in most requests). */
  isCurrent(): boolean {
    const { loadedLibsByName, loadedLibsByHandle } = this.module.LDSO;
    return sameEntries(loadedLibsByName, this.#byName) &&
      sameEntries(loadedLibsByHandle, this.#byHandle) &&
      // Symbols are merged into the imports only when a library loads, or turns global:
      // either shows above, and the imports object, thousands of names, is not listed.
      this.#flags.every(({ dso, refcount, global, exports }) =>
        dso.refcount === refcount && dso.global === global && dso.exports === exports
      );
  }

  /** Puts the linker back as it was when this state was taken. */
  restore(): void {
    const { LDSO } = this.module;
    replaceEntries(LDSO.loadedLibsByName, this.#byName);
    replaceEntries(LDSO.loadedLibsByHandle, this.#byHandle);
    for (const { dso, refcount, global, exports } of this.#flags) {
      Object.assign(dso, { refcount, global, exports });
    }
    // Loading only adds the symbols that were not defined yet (`mergeLibSymbols`).
    replaceEntries(this.#imports, this.#importsTaken);
  }
}

function sameEntries<T>(now: Record<PropertyKey, T>, saved: Record<PropertyKey, T>): boolean {
  const keys = Object.keys(now);
  return keys.length === Object.keys(saved).length &&
    keys.every((key) => now[key] === saved[key]);
}

function replaceEntries<T>(target: Record<PropertyKey, T>, saved: Record<PropertyKey, T>): void {
  for (const key of Object.keys(target)) {
    if (!Object.hasOwn(saved, key)) delete target[key];
  }
  Object.assign(target, saved);
}
