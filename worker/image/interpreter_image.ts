/**
 * The interpreter's image: everything a request can read or change, saved so that it can be
 * put back. A `BaseImage` is the pristine interpreter (taken once the worker has booted, and
 * again after pool-wide packages load); a `SessionImage` is what one session changed on top
 * of a base, parked while other tenants run.
 *
 * What an image holds:
 * - the Wasm linear memory (`memory_image.ts`);
 * - the Wasm globals, the function table's free slots and Pyodide's table of JavaScript objects
 *   (`wasm_state.ts`);
 * - the Emscripten file system (`fs_image.ts`);
 * - the dynamic linker's record of loaded libraries (`linker_state.ts`);
 * - Pyodide's record of loaded packages.
 * JavaScript's handles on Python objects made since the image are cut off whenever memory is
 * put back (`python_handles.ts`).
 *
 * @module
 */

import { FsState } from "./fs_image.ts";
import { LinkerState } from "./linker_state.ts";
import { MemoryImage, type MemoryPatch } from "./memory_image.ts";
import type { PythonHandles } from "./python_handles.ts";
import { type WasmChanges, WasmState } from "./wasm_state.ts";
import type { EmscriptenModule } from "../pyodide_internals.ts";
import { newClosureGeneration } from "../guarded_imports.ts";

/** The part of Pyodide the image reads and writes. */
export interface ImagedInterpreter {
  module: EmscriptenModule;
  /** Pyodide's record of loaded packages, a plain object shared with its package manager. */
  loadedPackages: Record<string, string>;
  handles: PythonHandles;
}

let nextBaseId = 1;

export class BaseImage {
  /** Distinguishes the bases of one worker. */
  readonly id = nextBaseId++;
  readonly #memory: MemoryImage;
  readonly #wasm: WasmState;
  readonly #fs: FsState;
  readonly #linker: LinkerState;
  readonly #packages: Record<string, string>;
  #fingerprint: Promise<string> | undefined;

  private constructor(private readonly interpreter: ImagedInterpreter) {
    const { module } = interpreter;
    this.#memory = MemoryImage.take(module.memory);
    this.#wasm = WasmState.take(module);
    this.#fs = FsState.take(module.FS);
    this.#linker = LinkerState.take(module);
    this.#packages = { ...interpreter.loadedPackages };
    interpreter.handles.imaged();
  }

  /** Images the interpreter as it is now: call between runs, with no Python frame running. */
  static take(interpreter: ImagedInterpreter): BaseImage {
    return new BaseImage(interpreter);
  }

  /** Bytes of memory this image keeps. */
  get bytes(): number {
    return this.#memory.bytes;
  }

  /** The packages loaded in this image. */
  get packages(): readonly string[] {
    return Object.keys(this.#packages);
  }

  /**
   * A digest of what the image holds, the same for every worker that booted the same way (the
   * boot is deterministic), so that a session parked on one can resume on another.
   */
  fingerprint(): Promise<string> {
    this.#fingerprint ??= (async () => {
      const text = new TextEncoder();
      const chunks = [
        ...this.#memory.digestInput(),
        text.encode(this.#fs.digestInput()),
        text.encode(this.packages.join(",")),
      ];
      const whole = new Uint8Array(chunks.reduce((n, c) => n + c.byteLength, 0));
      let offset = 0;
      for (const chunk of chunks) {
        whole.set(chunk, offset);
        offset += chunk.byteLength;
      }
      const digest = await crypto.subtle.digest("SHA-256", whole);
      return new Uint8Array(digest).toHex();
    })();
    return this.#fingerprint;
  }

  /**
   * Makes this base ready for a session taken on another worker's base (the same, by its
   * fingerprint); false if this worker's immortal values went another way (see `WasmState`).
   */
  adopt(immortals: unknown[]): boolean {
    return this.#wasm.adoptImmortals(immortals);
  }

  /** Why `session` cannot move to another worker, if it cannot. */
  whyBound(session: SessionImage): string | undefined {
    if (session.fs !== undefined) return "changed files, which cannot leave their worker";
    if (session.linker !== undefined) {
      return "loaded shared libraries, which cannot leave their worker";
    }
    return this.#wasm.whyBound(session.wasm);
  }

  /** Whether its tables grew past what a worker should keep (see `WasmState`). */
  get overgrown(): boolean {
    return this.#wasm.overgrown;
  }

  /** Puts the whole image back, memory that grew zeroed. */
  restore(): void {
    const { module, loadedPackages, handles } = this.interpreter;
    handles.endGeneration();
    newClosureGeneration();
    this.#memory.restoreTo(module.HEAPU8);
    // Views of the memory that JavaScript got since (`getBuffer().data`, or made from Wasm
    // through ctypes) are detached: a growth by nothing replaces its buffer. No stale callback
    // can then read or write the memory of the requests that follow.
    module.growMemory(module.HEAPU8.byteLength);
    this.#wasm.restore();
    if (!this.#fs.isCurrent()) this.#fs.restore();
    if (!this.#linker.isCurrent()) this.#linker.restore();
    for (const name of Object.keys(loadedPackages)) {
      if (!(name in this.#packages)) delete loadedPackages[name];
    }
    Object.assign(loadedPackages, this.#packages);
  }

  /** What the interpreter changed since this image was put back: a session to park. */
  diff(): SessionImage {
    const { module } = this.interpreter;
    return new SessionImage(
      this,
      this.#memory.diff(module.HEAPU8),
      this.#wasm.changes(),
      this.#fs.isCurrent() ? undefined : FsState.take(module.FS),
      this.#linker.isCurrent() ? undefined : LinkerState.take(module),
      { ...this.interpreter.loadedPackages },
    );
  }

  /** Applies a session's changes over this image, just restored. */
  apply(session: SessionImage): void {
    const { module, loadedPackages } = this.interpreter;
    if (module.HEAPU8.byteLength < session.memory.byteLength) {
      module.growMemory(session.memory.byteLength);
    }
    session.memory.applyTo(module.HEAPU8);
    this.#wasm.apply(session.wasm);
    session.fs?.restore();
    session.linker?.restore();
    Object.assign(loadedPackages, session.packages);
  }
}

/** One session's state: what differs from its base. */
export class SessionImage {
  constructor(
    readonly base: BaseImage,
    readonly memory: MemoryPatch,
    readonly wasm: WasmChanges,
    /** The file system, when it differs from the base's. */
    readonly fs: FsState | undefined,
    /** The dynamic linker's record, when it differs from the base's. */
    readonly linker: LinkerState | undefined,
    readonly packages: Record<string, string>,
  ) {}

  /** The session was resumed or dropped: what it held may be reused. */
  release(): void {
    this.memory.release();
  }

  /** Bytes held (memory pages; the file system shares the base's contents but for changes). */
  get bytes(): number {
    return this.memory.bytes;
  }
}
