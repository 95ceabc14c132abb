/**
 * Boots a Pyodide interpreter with the pool's runtime loaded: from scratch (about 3 s), or
 * from a memory snapshot of an interpreter booted that way (about 0.2 s). The Python thread
 * and the snapshot builder boot through here, so a snapshot holds exactly what a plain
 * start would have.
 *
 * @module
 */

import { loadPyodide, type PyodideAPI } from "pyodide";
import type { PyProxy } from "pyodide/ffi";
import { RUNTIME_MODULE, RUNTIME_SOURCES } from "./runtime_sources.ts";
import { restoringSparsely } from "./sparse_restore.ts";
import { guardClosuresOf, withGuardedImports } from "./guarded_imports.ts";
import { emscriptenOf } from "./pyodide_internals.ts";

const ENV = { HOME: "/home/pyodide", MPLBACKEND: "Agg" };

const MATPLOTLIB_CONFIG = "/home/pyodide/.config/matplotlib";

export interface BootOptions {
  /**
   * Restore from this snapshot instead of starting from scratch; its buffer is detached. A
   * promise lets the read overlap Pyodide's own loading (about 40 ms of a start).
   */
  snapshot?: Uint8Array | Promise<Uint8Array>;
  /** Boot so that `makeMemorySnapshot()` can be called afterwards. */
  forSnapshot?: boolean;
  /** Pyodide lock file naming the loadable packages (path or URL); Pyodide's own if absent. */
  lockFileUrl?: string;
  /** What Python's `js` module is; `globalThis` if absent. */
  jsglobals?: object;
}

/** The part of Pyodide's retained options that is released after a restore. */
interface BootConfig {
  _loadSnapshot?: Uint8Array;
}

export interface Interpreter {
  pyodide: PyodideAPI;
  /** The runtime module (runtime.py). */
  runtime: PyProxy;
  restored: boolean;
}

export async function bootInterpreter(options: BootOptions = {}): Promise<Interpreter> {
  // Emscripten names the program after the host's script (`sys.executable`, `$_`), and takes
  // the rest of the command line for Python's: neither may reach Python.
  (globalThis as unknown as { process: { argv: string[] } }).process.argv = ["python"];
  const load = () =>
    withGuardedImports(() =>
      loadPyodide({
        // Nothing Python prints may reach the process's stdout, which carries JSON-RPC.
        stdout: () => {},
        stderr: () => {},
        env: ENV,
        ...(options.forSnapshot ? { _makeSnapshot: true } : {}),
        ...(options.snapshot ? { _loadSnapshot: options.snapshot } : {}),
        ...(options.lockFileUrl ? { lockFileURL: options.lockFileUrl } : {}),
        ...(options.jsglobals ? { jsglobals: options.jsglobals } : {}),
      })
    );
  const pyodide = options.snapshot ? await restoringSparsely(options.snapshot, load) : await load();
  guardClosuresOf(emscriptenOf(pyodide));
  if (options.snapshot) {
    // Pyodide keeps its options for the interpreter's lifetime; the snapshot, copied into the
    // Wasm memory by now, would stay resident with them (30 MB of a worker's RSS). Detaching
    // its buffer frees it now rather than at some later full garbage collection.
    delete (pyodide as unknown as { _api: { config: BootConfig } })._api.config._loadSnapshot;
    ((await options.snapshot).buffer as ArrayBuffer).transfer(0);
  }
  // The file system lives on the JavaScript side, outside the snapshot: write it each time.
  pyodide.FS.mkdirTree(MATPLOTLIB_CONFIG);
  pyodide.FS.writeFile(`${MATPLOTLIB_CONFIG}/matplotlibrc`, "backend: Agg\n");
  if (!options.snapshot) {
    // Modules of their own keep the runtime out of reach of user code's fresh namespaces,
    // and importable after a snapshot restore.
    for (const [name, file] of RUNTIME_SOURCES) {
      const source = await Deno.readTextFile(new URL(`./python/${file}`, import.meta.url));
      const globals = pyodide.toPy({ source, name, file: `${name}.py` });
      pyodide.runPython(
        `import sys, types\n` +
          `module = types.ModuleType(name)\n` +
          `module.__file__ = file\n` +
          `exec(compile(source, file, "exec"), module.__dict__)\n` +
          `sys.modules[name] = module\n`,
        { globals },
      );
      globals.destroy();
    }
  }
  return {
    pyodide,
    runtime: pyodide.pyimport(RUNTIME_MODULE),
    restored: options.snapshot !== undefined,
  };
}
