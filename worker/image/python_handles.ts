/**
 * JavaScript's handles on Python objects, which must not outlive the memory they point into.
 *
 * Pyodide hands JavaScript three kinds of handle on a Python object: PyProxies, "once
 * callables" (the event loop's timer callbacks) and promise handlers (for `await` on a
 * JavaScript promise). Each holds a raw pointer into the Wasm memory. Once an image is put back,
 * a handle made since points at bytes that no longer hold its object: called, or finalized by
 * the garbage collector (which decrefs its pointer), it would corrupt the interpreter of the
 * next request. Handles belong to a generation, which ends each time memory is put back:
 *
 * - a finalizer of an ended generation decrefs a null pointer, which does nothing: Pyodide's
 *   finalization registry is given a held value whose pointer reads 0 once its generation is
 *   over (the held values of the image's own generations stay valid);
 * - a PyProxy still alive is marked destroyed, so that calling it throws;
 * - callbacks given to a timer, to a promise's `then` or to an event target run only within
 *   their generation if they carry Pyodide's `destroy` method (all three kinds of handle do:
 *   Pyodide's event loop schedules through `setImmediate` and `setTimeout`, `await` on a
 *   JavaScript promise goes through `then`), or if they were given while Python ran: Python can
 *   schedule plain JavaScript functions too (`scheduleCallback(view.set.bind(view, ...))`), and
 *   one that ran in a later generation could read or write that request's memory through a view
 *   the earlier one made. (Those views are also detached when memory is put back, see
 *   `interpreter_image.ts`.)
 *
 * @module
 */

/** What Pyodide registers for a PyProxy or a once callable: the pointer and its cache. */
interface Held {
  ptr: number;
  cache?: unknown;
}

interface Registry {
  register(target: object, held: Held, token?: object): void;
  unregister(token: object): void;
}

type CallPython = (pointer: number, args: unknown[]) => unknown;

/** The part of Pyodide's Emscripten module used here. */
export interface HandleModule {
  finalizationRegistry: Registry;
  /** How JavaScript calls a Python object (a PyProxy, a once callable). */
  callPyObject: CallPython;
  callPyObjectMaybePromising: CallPython;
}

/** A PyProxy's shared state: the registry's target for a PyProxy. */
interface ProxyShared {
  ptr: number;
  destroyed_msg?: string;
}

const DESTROYED = "This JavaScript handle on a Python object belonged to an earlier request, " +
  "whose interpreter state was put back; it can no longer be used.";

type Callback = (...args: unknown[]) => unknown;

function holdsPython(callback: unknown): callback is Callback {
  return typeof callback === "function" &&
    typeof (callback as { destroy?: unknown }).destroy === "function";
}

export class PythonHandles {
  #generation = 0;
  /** Python frames running: JavaScript calls into Python nest. */
  #depth = 0;
  /** Generations whose handles point into a saved image: they stay valid. */
  readonly #imaged = new Set<number>();
  /** PyProxies made in this generation, to mark destroyed when it ends. */
  #proxies: WeakRef<ProxyShared>[] = [];

  constructor(module: HandleModule, scope: typeof globalThis = globalThis) {
    const registry = module.finalizationRegistry;
    const valid = (generation: number) =>
      generation === this.#generation || this.#imaged.has(generation);
    module.finalizationRegistry = {
      register: (target, held, token) => {
        const generation = this.#generation;
        if (typeof (target as Partial<ProxyShared>).ptr === "number") {
          this.#proxies.push(new WeakRef(target as ProxyShared));
        }
        registry.register(target, {
          get ptr() {
            return valid(generation) ? held.ptr : 0;
          },
          get cache() {
            return valid(generation) ? held.cache : undefined;
          },
        }, token);
      },
      unregister: (token) => registry.unregister(token),
    };
    const inPython = <T>(work: () => T): T => {
      this.#depth++;
      try {
        return work();
      } finally {
        this.#depth--;
      }
    };
    for (const name of ["callPyObject", "callPyObjectMaybePromising"] as const) {
      const call = module[name];
      module[name] = (pointer, args) => inPython(() => call(pointer, args));
    }
    const gated = (callback: unknown) => {
      const python = holdsPython(callback);
      if (typeof callback !== "function" || (!python && this.#depth === 0)) return callback;
      const generation = this.#generation;
      return (...args: unknown[]) => {
        if (!valid(generation)) return undefined;
        return python ? inPython(() => callback(...args)) : callback(...args);
      };
    };
    const timers = scope as unknown as Record<string, Callback>;
    for (const name of ["setTimeout", "setInterval", "setImmediate"]) {
      const schedule = timers[name];
      if (typeof schedule !== "function") continue;
      timers[name] = (callback: unknown, ...rest: unknown[]) => schedule(gated(callback), ...rest);
    }
    // Network mode's AbortSignal and the like.
    const listen = EventTarget.prototype.addEventListener;
    EventTarget.prototype.addEventListener = function (
      this: EventTarget,
      type: string,
      listener: unknown,
      options?: unknown,
    ) {
      return listen.call(this, type, gated(listener) as never, options as never);
    } as typeof listen;
    // `catch` and `finally` call `then`; `await` in this thread's own code does not.
    const then = Promise.prototype.then;
    Promise.prototype.then = function (
      this: Promise<unknown>,
      onFulfilled?: unknown,
      onRejected?: unknown,
    ) {
      return then.call(this, gated(onFulfilled) as never, gated(onRejected) as never);
    } as typeof then;
  }

  /** An image was just taken: the handles made so far point into it. */
  imaged(): void {
    this.#imaged.add(this.#generation);
    this.#generation++;
    this.#proxies = [];
  }

  /**
   * The memory is about to be put back: no handle made since the last image or restore may
   * reach Python again. Call with no Python frame running.
   */
  endGeneration(): void {
    for (const ref of this.#proxies) {
      const shared = ref.deref();
      if (shared) {
        shared.ptr = 0;
        shared.destroyed_msg = DESTROYED;
      }
    }
    this.#proxies = [];
    this.#generation++;
  }

  /** Drops the notes of PyProxies already collected (between requests of one owner). */
  prune(): void {
    this.#proxies = this.#proxies.filter((ref) => ref.deref() !== undefined);
  }
}
