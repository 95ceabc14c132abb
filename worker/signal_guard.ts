/**
 * Keeps Pyodide's signal check from losing an interrupt that arrives while it runs.
 *
 * @module
 */

/**
 * Pyodide's signal check (`_Py_CheckEmscriptenSignals_Helper`) reads the interrupt buffer and
 * then writes 0 to it, in two steps: a signal the main thread stored between them was lost (11
 * of 2,500 cancels that came as the run started; the escalation's second interrupt then stopped
 * the code, 50 ms late). So the buffer Pyodide sees is a private one, filled from the shared
 * slot by `Atomics.exchange` when the check reads it: the check's write of 0 clears only what it
 * read, and a signal stored meanwhile waits in the slot for the next check.
 *
 * The check looks up `Module.Py_EmscriptenSignalBuffer` three times: is it set, the read, the
 * write. An accessor on that name fills the private buffer on the second lookup only. (An
 * accessor on element 0 would need no counting, but V8 runs every such access through its
 * runtime: a bare Python loop ran 8% slower, against 1-2% for this.) Nothing else looks the
 * name up while this thread runs Python: `checkInterrupt` does only without the GIL, and this
 * thread calls it with the GIL; user code cannot reach the module (sandbox.ts). A lookup out of
 * step would never invent a signal, but could drop every one until the next run opens: the
 * escalation would then replace the interpreter.
 */
export function guardSignalBuffer(module: object): void {
  const taken = new Int32Array(1);
  let slot: Int32Array | undefined;
  let lookup = 0;
  Object.defineProperty(module, "Py_EmscriptenSignalBuffer", {
    get() {
      if (slot === undefined) return undefined;
      const at = lookup;
      lookup = at === 2 ? 0 : at + 1;
      // A plain read first: the exchange, a locked instruction, is for a signal that is there.
      if (at === 1 && slot[0] !== 0 && taken[0] === 0) taken[0] = Atomics.exchange(slot, 0, 0);
      return taken;
    },
    set(buffer: Int32Array | undefined) {
      slot = buffer;
      taken[0] = 0;
      lookup = 0;
    },
  });
}
