/**
 * The cap on the Wasm heap (`--worker-max-memory-mb`).
 *
 * @module
 */

/** Bytes in a page of Wasm memory. */
const PAGE = 65536;

/**
 * Caps the Wasm heap. Emscripten grows memory through `WebAssembly.Memory.prototype.grow`;
 * when that throws, malloc fails and Python raises MemoryError, and the interpreter lives
 * on. Installed before Pyodide loads; the original `grow` stays in this closure.
 */
export function capHeapGrowth(maxBytes: number): void {
  const grow = WebAssembly.Memory.prototype.grow;
  WebAssembly.Memory.prototype.grow = function (this: WebAssembly.Memory, pages: number) {
    if (this.buffer.byteLength + pages * PAGE > maxBytes) {
      throw new RangeError(`Wasm heap cap of ${maxBytes} bytes reached`);
    }
    return grow.call(this, pages);
  };
}
