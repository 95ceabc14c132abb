/**
 * The contract with Pyodide's internals: the parts of its Emscripten module (`pyodide._module`,
 * no public getter) that this worker reads and patches, named in one place. Each is checked
 * against Pyodide 314.0.7 (`pyodide.asm.mjs`); `deno.json` pins that version.
 *
 * @module
 */

import type { PyodideAPI } from "pyodide";
import type { GrowingMemFs, NamingFs, QuotaFs } from "./fs_quota.ts";
import type { EmscriptenFs, MemFs } from "./image/fs_image.ts";
import type { HandleModule } from "./image/python_handles.ts";
import type { LinkerModule } from "./image/linker_state.ts";
import type { WasmModule } from "./image/wasm_state.ts";

/** Pyodide's Emscripten module, as far as this worker uses it. */
export type EmscriptenModule =
  & WasmModule
  & LinkerModule
  & HandleModule
  & {
    /** The Wasm linear memory (its views, HEAP8 and the others, are replaced when it grows). */
    memory: WebAssembly.Memory;
    HEAP8: Int8Array;
    HEAPU8: Uint8Array;
    FS: EmscriptenFs & QuotaFs & NamingFs;
    MEMFS: MemFs & GrowingMemFs;
    /** Grows the Wasm memory to at least `bytes`, and the heap views with it. */
    growMemory(bytes: number): unknown;
    /** Makes (and caches) the class of PyProxies with the given flags. */
    getPyProxyClass(flags: number): { prototype: object };
    HEAPU32: Uint32Array;
    _free(pointer: number): void;
    /** Called by `abort()` before it marks the runtime aborted for good (see crash.ts). */
    onAbort?: (what: unknown) => void;
  };

/** Pyodide's internal API (`pyodide._api`), as far as this worker patches it. */
export interface InternalApi {
  /** Called with every fatal error of the interpreter; rethrows it. */
  fatal_error(error: unknown): never;
}

/** The internal API behind a Pyodide instance. */
export function internalApiOf(pyodide: PyodideAPI): InternalApi {
  return (pyodide as unknown as { _api: InternalApi })._api;
}

/** The Emscripten module behind a Pyodide instance. */
export function emscriptenOf(pyodide: PyodideAPI): EmscriptenModule {
  return (pyodide as unknown as { _module: EmscriptenModule })._module;
}
