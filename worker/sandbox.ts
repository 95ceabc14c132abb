/**
 * What Python can see of JavaScript. Pyodide gives Python the `js` module (by default
 * `globalThis`, and from there `Deno`) and `pyodide_js` (the Pyodide API and the Emscripten
 * module). Here the Python thread takes those away before any user code runs. The Deno
 * permissions of the worker process remain the wall; this is the layer in front of it.
 *
 * @module
 */

import type { PyodideAPI } from "pyodide";
import { emscriptenOf } from "./pyodide_internals.ts";

/**
 * What Python's `js` module is: a frozen object with no prototype, so no way up to Object.
 *
 * @param requestEnded In network mode, a signal that aborts when the request that is running
 * ends (`image/python_handles.ts`), or none: its `fetch`es must not finish into a later one.
 */
export function pythonGlobals(
  allowFetch: boolean,
  requestEnded: () => AbortSignal | undefined,
): object {
  const globals = Object.create(null);
  if (allowFetch) {
    // Network mode: pyodide.http.pyfetch needs these; Deno's --allow-net still limits hosts.
    for (const name of ["AbortController", "AbortSignal", "Request", "Object"]) {
      globals[name] = (globalThis as Record<string, unknown>)[name];
    }
    globals.fetch = (input: RequestInfo | URL, options?: RequestInit) => {
      const ended = requestEnded();
      if (!ended) return fetch(input, options);
      const signals = [ended, options?.signal, input instanceof Request ? input.signal : null]
        .filter((signal): signal is AbortSignal => signal instanceof AbortSignal);
      return fetch(input, { ...options, signal: AbortSignal.any(signals) });
    };
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
  // Pyodide also keeps its API objects in its table of JavaScript objects, at places fixed by
  // its snapshot layout, where Wasm code (Python through ctypes) can name them by index: a
  // frozen empty object stands in for each.
  const module = emscriptenOf(pyodide);
  const internalApi = (pyodide as unknown as { _api: object })._api;
  const inert = Object.freeze(Object.create(null));
  for (let index = 0;; index++) {
    let value;
    try {
      value = module.__hiwire_get(index);
    } catch {
      break;
    }
    if (value === pyodide || value === internalApi) module.__hiwire_set(index, inert);
  }
  if (allowNetwork) {
    // pyodide.http.pyfetch needs this one helper from the API.
    const api = (pyodide as unknown as { _api: { abortSignalAny: unknown } })._api;
    const frozen = (entries: Record<string, unknown>) =>
      Object.freeze(Object.assign(Object.create(null), entries));
    // Not frozen yet: importing `pyodide_js._api` sets that attribute on it (imported below,
    // before the memory image freezes what Python can reach).
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
  if (allowNetwork) pyodide.runPython("import pyodide_js._api");
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

/** The standard ECMAScript globals: what every JavaScript object Python gets may lead to. */
const STANDARD_GLOBALS = [
  "Object",
  "Function",
  "Array",
  "Number",
  "Boolean",
  "String",
  "Symbol",
  "BigInt",
  "Date",
  "Promise",
  "RegExp",
  "Error",
  "AggregateError",
  "EvalError",
  "RangeError",
  "ReferenceError",
  "SyntaxError",
  "TypeError",
  "URIError",
  "SuppressedError",
  "JSON",
  "Math",
  "Intl",
  "Reflect",
  "Proxy",
  "Atomics",
  "ArrayBuffer",
  "SharedArrayBuffer",
  "DataView",
  "Int8Array",
  "Uint8Array",
  "Uint8ClampedArray",
  "Int16Array",
  "Uint16Array",
  "Int32Array",
  "Uint32Array",
  "Float16Array",
  "Float32Array",
  "Float64Array",
  "BigInt64Array",
  "BigUint64Array",
  "Map",
  "Set",
  "WeakMap",
  "WeakSet",
  "WeakRef",
  "FinalizationRegistry",
  "Iterator",
  "DisposableStack",
  "AsyncDisposableStack",
  "WebAssembly",
];

/** Intrinsics that no global names: iterator and function prototypes. */
function hiddenIntrinsics(): object[] {
  const iterators = [
    [][Symbol.iterator](),
    new Map()[Symbol.iterator](),
    new Set()[Symbol.iterator](),
    ""[Symbol.iterator](),
    "".matchAll(/./g),
    (function* () {})(),
    (async function* () {})(),
  ];
  return [
    ...iterators.map((iterator) => Object.getPrototypeOf(iterator)),
    ...[async function () {}, function* () {}, async function* () {}].map((f) =>
      Object.getPrototypeOf(f)
    ),
    Object.getPrototypeOf(Int8Array),
  ];
}

/**
 * Properties left writable (though not configurable): Pyodide's `PythonError` sets
 * `Error.stackTraceLimit` around each construction. The image puts it back (`image/wasm_state.ts`).
 */
const WRITABLE = new Map<unknown, string>([[Error, "stackTraceLimit"]]);

/** Freezes `value`, but for its property that must stay writable. */
function freeze(value: object): void {
  const writable = WRITABLE.get(value);
  if (writable === undefined) {
    Object.freeze(value);
    return;
  }
  for (const [key, descriptor] of Object.entries(Object.getOwnPropertyDescriptors(value))) {
    Object.defineProperty(value, key, {
      ...descriptor,
      configurable: false,
      ...("value" in descriptor && key !== writable ? { writable: false } : {}),
    });
  }
  Object.preventExtensions(value);
}

/**
 * Freezes `roots` and everything reachable from them through properties and prototypes,
 * `globalThis` excepted (typed arrays with elements, and Wasm's opaque objects, cannot be frozen,
 * and stay as they are).
 */
export function freezeReachable(roots: unknown[]): void {
  const seen = new Set<unknown>([globalThis]);
  const pending = [...roots];
  while (pending.length > 0) {
    const value = pending.pop();
    if ((typeof value !== "object" && typeof value !== "function") || value === null) continue;
    if (seen.has(value)) continue;
    seen.add(value);
    if (ArrayBuffer.isView(value)) continue;
    try {
      freeze(value);
    } catch {
      // Wasm GC objects ("WebAssembly objects are opaque") have no properties to freeze.
      continue;
    }
    pending.push(Object.getPrototypeOf(value));
    for (const descriptor of Object.values(Object.getOwnPropertyDescriptors(value))) {
      pending.push(descriptor.value, descriptor.get, descriptor.set);
    }
  }
}

/**
 * Frozen, an inherited data property cannot be overridden by assignment on an object that
 * inherits it (`object.constructor = x` throws in strict code: "the override mistake"), and
 * Pyodide's own code does that. So, as SES does, those that code overrides become accessors
 * whose setter defines the property on the object assigned to.
 */
function tameOverrides(): void {
  const prototypes: [object, string[] | undefined][] = [
    [Object.prototype, undefined],
    [Function.prototype, undefined],
    [Array.prototype, ["constructor", "toString"]],
    ...[Error, EvalError, RangeError, ReferenceError, SyntaxError, TypeError, URIError]
      .map((type): [object, undefined] => [type.prototype, undefined]),
  ];
  for (const [prototype, keys] of prototypes) {
    for (const key of keys ?? Object.getOwnPropertyNames(prototype)) {
      const descriptor = Object.getOwnPropertyDescriptor(prototype, key)!;
      if (!("value" in descriptor) || !descriptor.configurable) continue;
      const value = descriptor.value;
      Object.defineProperty(prototype, key, {
        get: () => value,
        set(this: object, replacement: unknown) {
          if (this === prototype) {
            throw new TypeError(`Cannot assign to read only property '${key}'`);
          }
          Object.defineProperty(this, key, {
            value: replacement,
            writable: true,
            enumerable: true,
            configurable: true,
          });
        },
        enumerable: descriptor.enumerable,
        configurable: false,
      });
    }
  }
}

/**
 * Freezes what every request shares in this thread's JavaScript and could reach from Python:
 * the standard intrinsics (`to_js([]).__proto__` is `Array.prototype`), the objects of network
 * mode's `js` module, and Pyodide's PyProxy classes. A request could otherwise leave a value
 * or a hook there for the next tenant, past the memory image. Call once, after everything
 * that patches an intrinsic (the heap cap, the handles of `image/python_handles.ts`).
 */
export function freezeShared(
  module: { getPyProxyClass(flags: number): { prototype: object } },
  jsglobals: object,
): void {
  const scope = globalThis as unknown as Record<string, unknown>;
  tameOverrides();
  freezeReachable([
    ...STANDARD_GLOBALS.map((name) => scope[name]),
    ...hiddenIntrinsics(),
    ...Object.values(jsglobals),
  ]);
  // PyProxy classes are made on demand, one per set of flags.
  const classOf = module.getPyProxyClass;
  module.getPyProxyClass = (flags) => {
    const proxyClass = classOf(flags);
    freezeReachable([proxyClass, proxyClass.prototype]);
    return proxyClass;
  };
}

/**
 * JavaScript stack traces name the host's files (`/…/node_modules/…/pyodide.asm.mjs`), and
 * Python can read them (`JsException.stack`): frames keep their file's base name only.
 */
export function hideHostPathsInStacks(): void {
  type Frame = { toString(): string };
  const hostPath = /(?:(?:file|https?):\/\/)?\/[^\s():]*\/([^/\s():]+)/g;
  (Error as unknown as { prepareStackTrace: unknown }).prepareStackTrace = (
    error: Error,
    frames: Frame[],
  ) =>
    [
      `${error.name}: ${error.message}`,
      ...frames.map((frame) => `    at ${String(frame).replace(hostPath, "$1")}`),
    ].join("\n");
}

/**
 * Refuses Wasm code that would share the interpreter's memory, table or globals, outside
 * package loading. A library loaded through `ctypes.CDLL` could otherwise overwrite slots of
 * the function table or keep memory of its own, which no memory image puts back. Emscripten's
 * own small modules (wrappers of JavaScript functions, libffi closures) import functions only,
 * and still load. Returns a gate that lets loading through while `work` runs.
 */
export function guardWasmLoading(): <T>(work: () => Promise<T>) => Promise<T> {
  let open = 0;
  const check = (module: WebAssembly.Module) => {
    if (open > 0) return;
    const shared = WebAssembly.Module.imports(module).find((entry) => entry.kind !== "function");
    if (shared) {
      throw new Error(
        `loading Wasm code that imports the interpreter's ${shared.kind} (${shared.module}.` +
          `${shared.name}) is not allowed outside package loading`,
      );
    }
  };
  const { Instance, instantiate } = WebAssembly;
  (WebAssembly as { Instance: unknown }).Instance = new Proxy(Instance, {
    construct(target, args, newTarget) {
      check(args[0]);
      return Reflect.construct(target, args, newTarget);
    },
  });
  WebAssembly.instantiate = async function (source: unknown, imports?: WebAssembly.Imports) {
    const module = source instanceof WebAssembly.Module
      ? source
      : await WebAssembly.compile(source as BufferSource);
    check(module);
    return source instanceof WebAssembly.Module
      ? instantiate(module, imports)
      : { module, instance: await instantiate(module, imports) };
  } as typeof instantiate;
  return async (work) => {
    open++;
    try {
      return await work();
    } finally {
      open--;
    }
  };
}
