/**
 * Emscripten's JavaScript imports that Wasm code (Python, through ctypes) must not use as they
 * are, replaced before the module is instantiated. The imports object is also what side modules
 * link against, so they get the replacements too.
 *
 * - The imports that evaluate a string as JavaScript (`emscripten_run_script` and the like). The
 *   workers' V8 refuses to evaluate strings (`--disallow-code-generation-from-strings`), but its
 *   `EvalError`, thrown through Wasm frames, is fatal to Pyodide: they evaluate nothing, and
 *   return 0 (a null pointer).
 * - The imports that schedule a call of a Wasm function for later, from a JavaScript event:
 *   Emscripten's main loop and its blockers, its timers, promises, fetches (`async_wget`),
 *   workers, sockets, WebSockets, SDL's timer. Such a call could come after the request is over
 *   and its image was put back, into the next tenant's interpreter, with arguments that the
 *   request chose. Python has its own event loop; these do nothing and return 0. (The timers
 *   they would use are also gated by request, see `image/python_handles.ts`.)
 * - The imports that would end the runtime for good, which Python reaches through ctypes or a
 *   signal's default action: clearing the runtime's keepalive (after which `exit` closes every
 *   file stream, which no memory image puts back), `emscripten_force_exit` (which clears it
 *   and exits); `exit` then only throws, which the worker recovers from (`crash.ts`). And
 *   `system`, whose Node branch would spawn a shell (Deno refuses, fatally): it fails with
 *   ENOSYS, like Emscripten's browser branch.
 * - libffi's closure imports, which write a trampoline into any function-table slot they are
 *   given. Called with a slot of the image (`float.__repr__`'s, say), the trampoline would stay
 *   there after the image is put back, for the next tenant to call. A trampoline may go only
 *   into a slot that `ffi_closure_alloc_js` handed out since the image was last put back, and a
 *   slot handed out before may not be freed for reuse.
 *
 * @module
 */

const SCRIPT_IMPORTS = [
  "emscripten_run_script",
  "emscripten_run_script_int",
  "emscripten_run_script_string",
  "emscripten_async_run_script",
  "emscripten_async_load_script",
];

/** The scheduling families; none of them is the main module's own import. */
const SCHEDULING_IMPORTS = new RegExp(
  "^(emscripten_(set_main_loop(_arg)?|async_call|set_(timeout|immediate)(_loop)?|set_interval" +
    "|request_animation_frame(_loop)?|async_wget.*|create_worker|call_worker" +
    "|promise_(then|all|all_settled|any|race|await)|set_socket_.*_callback|websocket_.*" +
    "|set_.*_callback_on_thread)|_emscripten_push_(uncounted_)?main_loop_blocker|SDL_AddTimer" +
    "|setNetworkCallback)$",
);

/** Emscripten's ENOSYS, which `system` returns for a command; 0 says no shell exists. */
const ENOSYS = 52;

/** libffi's status for a closure it could not prepare. */
const FFI_BAD_TYPEDEF = 1;

type Import = ((...args: number[]) => number | void) & { sig?: string };

/** What the closure guard reads of the module once it is instantiated. */
interface ClosureModule {
  HEAPU32: Uint32Array;
  _free(pointer: number): void;
}

/** The function-table slots handed out to closures since the image was last put back. */
const closureSlots = new Set<number>();
let module: ClosureModule | undefined;

/** The image was put back: slots handed out before belong to no one who may write them. */
export function newClosureGeneration(): void {
  closureSlots.clear();
}

/** The guarded imports of `env`, Emscripten's import object (`wasmImports`). */
function guard(env: Record<string, Import>): void {
  // dlsym wraps an import for the function table by its signature: replacements keep it.
  const replace = (name: string, by: (...args: number[]) => number | void) => {
    if (env[name]) env[name] = Object.assign(by, { sig: env[name].sig });
  };
  const inert = Object.keys(env).filter((name) => SCHEDULING_IMPORTS.test(name));
  for (const name of [...SCRIPT_IMPORTS, ...inert]) replace(name, () => 0);
  replace("_emscripten_system", (command) => command ? -ENOSYS : 0);
  replace("_emscripten_runtime_keepalive_clear", () => {});
  replace("emscripten_runtime_keepalive_pop", () => {});
  const exit = env.proc_exit;
  replace("emscripten_force_exit", (status) => exit(status));
  const { ffi_closure_alloc_js: alloc, ffi_closure_free_js: free } = env;
  const prepare = env.ffi_prep_closure_loc_js;
  if (!alloc || !free || !prepare) return;
  // The closure and the code word hold the slot's index (libffi's emscripten port).
  env.ffi_closure_alloc_js = Object.assign((size: number, code: number) => {
    const closure = alloc(size, code) as number;
    if (module && closure) closureSlots.add(module.HEAPU32[code >>> 2]);
    return closure;
  }, { sig: alloc.sig });
  env.ffi_closure_free_js = Object.assign((closure: number) => {
    if (!module || closureSlots.has(module.HEAPU32[closure >>> 2])) return free(closure);
    module._free(closure);
  }, { sig: free.sig });
  env.ffi_prep_closure_loc_js = Object.assign((...args: number[]) => {
    const codeloc = args[4];
    if (module && !closureSlots.has(codeloc)) return FFI_BAD_TYPEDEF;
    return prepare(...args);
  }, { sig: prepare.sig });
}

/** Runs `boot` (Pyodide's instantiation) with the guarded imports in place. */
export async function withGuardedImports<T>(boot: () => Promise<T>): Promise<T> {
  const instantiate = WebAssembly.instantiate;
  WebAssembly.instantiate = function (source: unknown, imports?: WebAssembly.Imports) {
    if (imports?.env) guard(imports.env as Record<string, Import>);
    return instantiate(source as BufferSource, imports);
  } as typeof instantiate;
  try {
    return await boot();
  } finally {
    WebAssembly.instantiate = instantiate;
  }
}

/** The instantiated module, whose memory the closure guard reads. */
export function guardClosuresOf(instantiated: ClosureModule): void {
  module = instantiated;
}
