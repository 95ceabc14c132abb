/**
 * JavaScript work that a request leaves behind, which must not outlive the memory it belongs to.
 *
 * Pyodide hands JavaScript three kinds of handle on a Python object: PyProxies, "once
 * callables" (the event loop's timer callbacks) and promise handlers (for `await` on a
 * JavaScript promise). Each holds a raw pointer into the Wasm memory: once an image is put back,
 * one made since points at bytes that no longer hold its object. And Python can schedule plain
 * JavaScript too (a bound function given to the event loop's scheduler, Emscripten's main loop
 * through ctypes, a thenable the engine adopts), which could then run in a later request's
 * interpreter. So work belongs to a generation, which ends each time memory is put back:
 *
 * - a finalizer of an ended generation decrefs a null pointer, which does nothing: Pyodide's
 *   finalization registry is given a held value whose pointer reads 0 once its generation is
 *   over (the held values of the image's own generations stay valid);
 * - a PyProxy still alive is marked destroyed, so that calling it throws;
 * - every callback given to a timer, to a promise's `then` or to an event target (a function, or
 *   an object's `handleEvent`), from the first image on, runs only within its generation (a stale `then` callback returns a promise
 *   that never settles, so the rest of its chain stops too). This thread's own code waits with
 *   `await` (the engine's own `then`) and is not affected;
 * - before a generation ends, the microtasks it queued run (`drain`): the engine runs a
 *   thenable's `then` in a microtask, which must see the generation that queued it;
 * - `fetch`es of the generation are aborted (network mode; `signal`).
 *
 * (The memory's JavaScript views are also detached when it is put back, see
 * `interpreter_image.ts`.)
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

const isListener = (value: unknown): value is object =>
  typeof value === "function" || (typeof value === "object" && value !== null);

/** What a stale callback returns: `then` adopts it, and its chain waits for good. */
const NEVER = new Promise<never>(() => {});

export class PythonHandles {
  #generation = 0;
  /** Generations whose handles point into a saved image: they stay valid. */
  readonly #imaged = new Set<number>();
  /** PyProxies made in this generation, to mark destroyed when it ends. */
  #proxies: WeakRef<ProxyShared>[] = [];
  #abort = new AbortController();
  /** The scheduler this thread's own code uses: not gated. */
  readonly #setImmediate: (callback: () => void) => unknown;

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
      if (typeof callback !== "function") return callback;
      const generation = this.#generation;
      return (...args: unknown[]) => valid(generation) ? (callback as Callback)(...args) : NEVER;
    };
    const timers = scope as unknown as Record<string, Callback>;
    this.#setImmediate = timers.setImmediate.bind(scope);
    for (const name of ["setTimeout", "setInterval", "setImmediate"]) {
      const schedule = timers[name];
      if (typeof schedule !== "function") continue;
      timers[name] = (callback: unknown, ...rest: unknown[]) => schedule(gated(callback), ...rest);
    }
    // `catch` and `finally` call `then`; `await` does not.
    const then = Promise.prototype.then;
    Promise.prototype.then = function (
      this: Promise<unknown>,
      onFulfilled?: unknown,
      onRejected?: unknown,
    ) {
      return then.call(this, gated(onFulfilled) as never, gated(onRejected) as never);
    } as typeof then;
    // Network mode's AbortSignal and the like. A listener may be an object with `handleEvent`,
    // and must be found again by `removeEventListener`: one wrapper per listener and generation.
    const wrappers = new WeakMap<object, { generation: number; wrapper: unknown }>();
    const wrapperOf = (listener: unknown) => {
      if (!isListener(listener)) return listener;
      const known = wrappers.get(listener);
      if (known?.generation === this.#generation) return known.wrapper;
      const call = typeof listener === "function"
        ? listener as Callback
        : (event: unknown) => (listener as { handleEvent: Callback }).handleEvent(event);
      const wrapper = gated(call);
      wrappers.set(listener, { generation: this.#generation, wrapper });
      return wrapper;
    };
    const { addEventListener: listen, removeEventListener: unlisten } = EventTarget.prototype;
    EventTarget.prototype.addEventListener = function (
      this: EventTarget,
      type: string,
      listener: unknown,
      options?: unknown,
    ) {
      return listen.call(this, type, wrapperOf(listener) as never, options as never);
    } as typeof listen;
    EventTarget.prototype.removeEventListener = function (
      this: EventTarget,
      type: string,
      listener: unknown,
      options?: unknown,
    ) {
      const wrapper = isListener(listener) ? wrappers.get(listener)?.wrapper : undefined;
      return unlisten.call(this, type, (wrapper ?? listener) as never, options as never);
    } as typeof unlisten;
  }

  /** Aborts when the current generation ends: for the network requests Python makes. */
  get signal(): AbortSignal {
    return this.#abort.signal;
  }

  /** Waits until the microtasks queued so far, and those they queue, have run. */
  drain(): Promise<void> {
    return new Promise((resolve) => this.#setImmediate(resolve));
  }

  /** An image was just taken: the handles made so far point into it. */
  imaged(): void {
    this.#imaged.add(this.#generation);
    this.#generation++;
    this.#proxies = [];
  }

  /**
   * The memory is about to be put back: nothing of the generation may reach Python again. Call
   * with no Python frame running, after `drain`.
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
    this.#abort.abort(new DOMException("the request that made it has ended", "AbortError"));
    this.#abort = new AbortController();
  }

  /** Drops the notes of PyProxies already collected (between requests of one owner). */
  prune(): void {
    this.#proxies = this.#proxies.filter((ref) => ref.deref() !== undefined);
  }
}
