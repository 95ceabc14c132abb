/**
 * The state of the Wasm instance that lives outside its linear memory: the mutable globals
 * (the stack pointer, the stack limits, the temporary return value), the free slots of the
 * function table, and Pyodide's reference table of JavaScript objects (hiwire), an externref
 * table that Python objects point into by index.
 *
 * The module has four mutable globals of its own and exports a getter and a setter for each
 * (read off the binary of Pyodide 314.0.7), so each is saved and put back through them.
 *
 * The JavaScript objects of the tables, and all they lead to, are frozen when a state is taken:
 * Python reaches them (ctypes can name any entry by index), and a value or a hook left on one
 * would outlive the state put back. (The deduplication map's entries, which a frozen `Map`
 * still takes, are put back.)
 *
 * @module
 */

import { freezeReachable } from "../sandbox.ts";

/** The part of Pyodide's Emscripten module used here. */
export interface WasmModule {
  ___stack_pointer: WebAssembly.Global;
  _emscripten_stack_get_base(): number;
  _emscripten_stack_get_end(): number;
  _emscripten_stack_set_limits(base: number, end: number): void;
  __emscripten_tempret_get(): number;
  __emscripten_tempret_set(value: number): void;
  /** Free slots of the function table, in Emscripten's closure and on the module alike. */
  freeTableIndexes: number[];
  wasmTable: WebAssembly.Table;
  __hiwire_get(index: number): unknown;
  __hiwire_set(index: number, value: unknown): number;
  __hiwire_immortal_get(index: number): unknown;
  __hiwire_immortal_add(value: unknown): number;
}

/**
 * Hiwire's deduplication map (JavaScript object to reference, so that one object gets one
 * reference), a `Map` it keeps in its table of immortal values. A reference freed since the
 * image stays in it, and the next lookup of that object would revive it: "hiwire_incref on
 * invalid reference", fatal to Pyodide.
 */
function deduplicationMap(module: WasmModule): Map<unknown, number> {
  for (let index = 0;; index++) {
    const value = module.__hiwire_immortal_get(index);
    if (value instanceof Map) return value;
  }
}

/** Slots of the function table a request may add before its worker asks to be replaced. */
export const MAX_TABLE_GROWTH = 50_000;
/**
 * Entries of the hiwire table, or of the immortal values, past the image's before its worker
 * asks to be replaced: neither table shrinks, and each restore goes over the first.
 */
export const MAX_HIWIRE_GROWTH = 100_000;

/**
 * The length of a table that never shrinks, whose getter throws past its end (hiwire's table
 * and its immortal values): each probe starts where the last one ended.
 */
class GrowingLength {
  #known = 0;

  constructor(private readonly get: (index: number) => unknown) {}

  /** Probes the length now. */
  now(): number {
    for (;;) {
      try {
        this.get(this.#known);
      } catch {
        return this.#known;
      }
      this.#known++;
    }
  }

  /** The length as last probed. */
  get known(): number {
    return this.#known;
  }
}

/**
 * What a session holds outside the memory: the hiwire entries that differ from the base, the
 * deduplication map, the immortal values added since the base (strings Pyodide interns, which
 * its memory caches by index), and the lengths of the tables (its memory may name any slot
 * below them).
 */
export interface WasmChanges {
  entries: [index: number, value: unknown][];
  deduplicated: [value: unknown, reference: number][];
  immortals: unknown[];
  hiwireLength: number;
  tableLength: number;
}

export class WasmState {
  readonly #stackPointer: number;
  readonly #stackBase: number;
  readonly #stackEnd: number;
  readonly #tempRet: number;
  readonly #freeTableIndexes: number[];
  readonly #tableLength: number;
  readonly #hiwire: unknown[];
  readonly #hiwireLength: GrowingLength;
  readonly #deduplicationMap: Map<unknown, number>;
  /** Immortal values only grow; those of the base are never put back. */
  readonly #immortalLength: number;
  readonly #immortalsLength: GrowingLength;
  readonly #deduplicated: [unknown, number][];
  /** The one writable property of the frozen intrinsics (see worker/sandbox.ts). */
  readonly #stackTraceLimit = Error.stackTraceLimit;

  private constructor(private readonly module: WasmModule) {
    this.#stackPointer = module.___stack_pointer.value;
    this.#stackBase = module._emscripten_stack_get_base();
    this.#stackEnd = module._emscripten_stack_get_end();
    this.#tempRet = module.__emscripten_tempret_get();
    this.#freeTableIndexes = [...module.freeTableIndexes];
    this.#tableLength = module.wasmTable.length;
    this.#hiwireLength = new GrowingLength((i) => module.__hiwire_get(i));
    this.#hiwire = Array.from(
      { length: this.#hiwireLength.now() },
      (_, i) => module.__hiwire_get(i),
    );
    this.#deduplicationMap = deduplicationMap(module);
    this.#immortalsLength = new GrowingLength((i) => module.__hiwire_immortal_get(i));
    this.#immortalLength = this.#immortalsLength.now();
    freezeReachable([
      ...this.#hiwire,
      ...Array.from({ length: this.#immortalLength }, (_, i) => module.__hiwire_immortal_get(i)),
    ]);
    this.#deduplicated = [...this.#deduplicationMap];
  }

  /** Saves the state as it is now; call with no Wasm frame on the stack. */
  static take(module: WasmModule): WasmState {
    return new WasmState(module);
  }

  /** JavaScript objects held (the hiwire table's length). */
  get hiwireLength(): number {
    return this.#hiwire.length;
  }

  /**
   * Whether a table that restores do not shrink grew past what a worker should keep: the
   * function table, the hiwire table, the immortal values. Function-table slots added since the
   * image stay: they hold functions of the pristine module and the closures of libffi (no
   * other code can load, see `interpreter.ts`), and Emscripten's map of functions to slots,
   * which the image does not hold, still points at them (a `dlsym` of a JavaScript import finds
   * the slot an earlier lookup made: SECURITY.md). Only the free list is put back, so that a
   * slot the image uses is never handed out again.
   */
  get overgrown(): boolean {
    return this.module.wasmTable.length - this.#tableLength > MAX_TABLE_GROWTH ||
      this.#hiwireLength.known - this.#hiwire.length > MAX_HIWIRE_GROWTH ||
      this.#immortalsLength.now() - this.#immortalLength > MAX_HIWIRE_GROWTH;
  }

  /** Puts the globals, the free list and the hiwire table back; no Wasm frame may be running. */
  restore(): void {
    const m = this.module;
    m.___stack_pointer.value = this.#stackPointer;
    m._emscripten_stack_set_limits(this.#stackBase, this.#stackEnd);
    m.__emscripten_tempret_set(this.#tempRet);
    m.freeTableIndexes.splice(0, Infinity, ...this.#freeTableIndexes);
    Error.stackTraceLimit = this.#stackTraceLimit;
    // Entries past the saved length were made since: they go, and the table's own free list,
    // in the memory put back with them, sees their slots as free.
    const length = this.#hiwireLength.now();
    for (let i = 0; i < length; i++) {
      const saved = i < this.#hiwire.length ? this.#hiwire[i] : null;
      if (m.__hiwire_get(i) !== saved) m.__hiwire_set(i, saved);
    }
    this.#restoreDeduplicated(this.#deduplicated);
  }

  #restoreDeduplicated(entries: [unknown, number][]): void {
    const map = this.#deduplicationMap;
    map.clear();
    for (const [value, reference] of entries) map.set(value, reference);
  }

  /** What differs from this state now, outside the memory. */
  changes(): WasmChanges {
    const m = this.module;
    const entries: WasmChanges["entries"] = [];
    const length = this.#hiwireLength.now();
    for (let i = 0; i < length; i++) {
      const value = m.__hiwire_get(i);
      if (value !== (i < this.#hiwire.length ? this.#hiwire[i] : null)) entries.push([i, value]);
    }
    const map = this.#deduplicationMap;
    const same = map.size === this.#deduplicated.length &&
      this.#deduplicated.every(([value, reference]) => map.get(value) === reference);
    const immortals = Array.from(
      { length: this.#immortalsLength.now() - this.#immortalLength },
      (_, i) => m.__hiwire_immortal_get(this.#immortalLength + i),
    );
    return {
      entries,
      deduplicated: same ? [] : [...map],
      immortals,
      hiwireLength: length,
      tableLength: m.wasmTable.length,
    };
  }

  /**
   * Why a session with these changes cannot resume on another worker, if it cannot: its
   * JavaScript objects live in its worker's heap, and function-table slots added since the
   * base (ctypes callbacks, functions looked up by name) exist in its worker's table only.
   */
  whyBound(changes: WasmChanges): string | undefined {
    if (changes.entries.length > 0 || changes.deduplicated.length > 0) {
      return "holds JavaScript objects, which cannot leave their worker";
    }
    if (changes.tableLength > this.#tableLength) {
      return "may call functions that C code (ctypes) added to its worker's function table, " +
        "which cannot leave their worker";
    }
    if (changes.immortals.some((value) => typeof value !== "string")) {
      return "holds values Pyodide keeps in its worker's JavaScript heap";
    }
  }

  /**
   * Appends `immortals` (a session's, from another worker) after the base's, unless this
   * worker added others there already; false if it did, and they differ.
   */
  adoptImmortals(immortals: unknown[]): boolean {
    const m = this.module;
    const length = this.#immortalsLength.now();
    for (let i = 0; i < immortals.length; i++) {
      const index = this.#immortalLength + i;
      if (index < length) {
        if (m.__hiwire_immortal_get(index) !== immortals[i]) return false;
      } else m.__hiwire_immortal_add(immortals[i]);
    }
    return true;
  }

  /** Applies changes taken by `changes`, over this state restored. */
  apply(changes: WasmChanges): void {
    let length = this.#hiwireLength.now();
    // The table grows one slot at a time (setting the slot at its length); gaps stay empty.
    // The session's free list may name any slot below its length.
    const grown = (target: number) => {
      for (; length < target; length++) this.module.__hiwire_set(length, null);
    };
    for (const [index, value] of changes.entries) {
      grown(index);
      this.module.__hiwire_set(index, value);
      length = Math.max(length, index + 1);
    }
    grown(changes.hiwireLength);
    if (changes.deduplicated.length > 0) this.#restoreDeduplicated(changes.deduplicated);
  }
}
