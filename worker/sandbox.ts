/**
 * What Python can see of JavaScript. Pyodide gives Python the `js` module (by default
 * `globalThis`, and from there `Deno`) and `pyodide_js` (the Pyodide API and the Emscripten
 * module). Here the Web Worker takes those away before any user code runs. The Deno
 * permissions of the worker process remain the wall; this is the layer in front of it.
 *
 * @module
 */

import type { PyodideAPI } from "pyodide";

/** What Python's `js` module is: a frozen object with no prototype, so no way up to Object. */
export function pythonGlobals(allowFetch: boolean): object {
  const globals = Object.create(null);
  if (allowFetch) {
    // Network mode: pyodide.http.pyfetch needs these; Deno's --allow-net still limits hosts.
    for (const name of ["fetch", "AbortController", "AbortSignal", "Request", "Object"]) {
      globals[name] = (globalThis as Record<string, unknown>)[name];
    }
  }
  return Object.freeze(globals);
}

/**
 * Cuts the ways from a JavaScript object back to code evaluation and to the process's
 * stdout. Called after Pyodide has booted and before Python runs user code.
 */
export function hardenThread(pyodide: PyodideAPI, allowNetwork: boolean): void {
  // `x.constructor.constructor("return globalThis")()` works from any function or object:
  // every function's prototype chain ends at a constructor that compiles source. Drop them.
  const kinds = [
    function () {},
    async function () {},
    function* () {},
    async function* () {},
  ];
  for (const kind of kinds) {
    Object.defineProperty(Object.getPrototypeOf(kind), "constructor", {
      value: undefined,
      writable: false,
      configurable: false,
    });
  }
  // The Pyodide API object reaches the Emscripten module and, through it, everything.
  pyodide.unregisterJsModule("pyodide_js");
  if (allowNetwork) {
    // pyodide.http.pyfetch needs this one helper from the API.
    const api = (pyodide as unknown as { _api: { abortSignalAny: unknown } })._api;
    const frozen = (entries: Record<string, unknown>) =>
      Object.freeze(Object.assign(Object.create(null), entries));
    // Not frozen itself: importing `pyodide_js._api` sets that attribute on it.
    pyodide.registerJsModule(
      "pyodide_js",
      Object.assign(Object.create(null), { _api: frozen({ abortSignalAny: api.abortSignalAny }) }),
    );
  }
  // Submodules too: pyodide.webloop's `from pyodide_js._api import ...` leaves
  // `pyodide_js._api` in sys.modules, and its `public_api._module` is the Emscripten module.
  pyodide.runPython(
    "import sys\n" +
      "[sys.modules.pop(n) for n in [n for n in sys.modules if n.partition('.')[0] in ('js', 'pyodide_js')]]\n" +
      "del sys",
  );
  // stdout carries the worker's JSON-RPC: nothing in this thread may write there.
  Deno.stdout.close();
  const quiet = () => {};
  for (const method of ["log", "info", "debug", "dir", "dirxml", "table", "trace", "group"]) {
    (console as unknown as Record<string, unknown>)[method] = quiet;
  }
}

/** A JavaScript function for Python with no prototype, so no `.constructor` to climb. */
export function isolatedFunction<T extends (...args: never[]) => unknown>(fn: T): T {
  Object.setPrototypeOf(fn, null);
  return fn;
}
