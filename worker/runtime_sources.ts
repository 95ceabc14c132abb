/**
 * The runtime's Python modules, named in one place for the interpreter that loads them and
 * for the supervisor, which hashes them into the snapshot's name.
 *
 * @module
 */

/** The module name under which the runtime (python/runtime.py) is importable. */
export const RUNTIME_MODULE = "pyodide_pool_runtime";

/** The runtime's Python modules, dependencies first: module name and file in python/. */
export const RUNTIME_SOURCES: readonly [string, string][] = [
  ["pyodide_pool_state", "state.py"],
  ["pyodide_pool_workdir", "workdir.py"],
  ["pyodide_pool_figures", "figures.py"],
  ["pyodide_pool_isolation", "isolation.py"],
  ["pyodide_pool_loop_guard", "loop_guard.py"],
  [RUNTIME_MODULE, "runtime.py"],
];
