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
 * - callbacks that carry Pyodide's `destroy` method (all three kinds do), given to a timer or
 *   to a promise's `then`, run only within their generation: Pyodide's event loop schedules
 *   through `setImmediate` and `setTimeout`, and `await` on a JavaScript promise through
 *   `then`.
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

/** The part of Pyodide's Emscripten module used here. */
export interface HandleModule {
  finalizationRegistry: Registry;
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
    const gated = (callback: unknown) => {
      if (!holdsPython(callback)) return callback;
      const generation = this.#generation;
      return (...args: unknown[]) => valid(generation) ? callback(...args) : undefined;
    };
    const timers = scope as unknown as Record<string, Callback>;
    for (const name of ["setTimeout", "setInterval", "setImmediate"]) {
      const schedule = timers[name];
      if (typeof schedule !== "function") continue;
      timers[name] = (callback: unknown, ...rest: unknown[]) => schedule(gated(callback), ...rest);
    }
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
