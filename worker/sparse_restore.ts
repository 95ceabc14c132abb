/**
 * Lets Pyodide's snapshot restore skip the pages that are zero on both sides.
 *
 * Pyodide restores a memory snapshot with one `HEAP8.set` of the whole snapshot into a fresh
 * Wasm memory. About half of the snapshot's 64 KiB pages are zero (free heap), and so are the
 * fresh memory's, but writing zeros still makes the kernel back every page it touches: some
 * 15 MB of each worker's resident memory. Pyodide has no option for this, so while it boots,
 * `set` on Int8Array skips those pages when the source is the snapshot, and is put back after.
 * A page the module's own data already wrote to is copied as before.
 *
 * @module
 */

const PAGE_BYTES = 65536;

function isZero(bytes: ArrayBufferView, start: number, end: number): boolean {
  const words = new Int32Array(bytes.buffer, bytes.byteOffset + start, (end - start) / 4);
  for (let i = 0; i < words.length; i++) if (words[i] !== 0) return false;
  return true;
}

/** Runs `boot` (a `loadPyodide` restoring `snapshot`) with the zero pages left untouched. */
export async function restoringSparsely<T>(
  snapshot: Uint8Array | Promise<Uint8Array>,
  boot: () => Promise<T>,
): Promise<T> {
  const set = Int8Array.prototype.set;
  // Known before the copy: Pyodide awaits the snapshot, after this callback, to size the memory.
  let source: ArrayBufferLike | undefined;
  Promise.resolve(snapshot).then((bytes) => source = bytes.buffer, () => {});
  Int8Array.prototype.set = function (this: Int8Array, array: ArrayLike<number>, offset = 0) {
    const fromSnapshot = array instanceof Uint8Array && array.buffer === source;
    const wordAligned = [array.length, (array as Uint8Array).byteOffset, this.byteOffset + offset]
      .every((n) => n % 4 === 0);
    if (!fromSnapshot || !wordAligned) return set.call(this, array, offset);
    for (let start = 0; start < array.length; start += PAGE_BYTES) {
      const end = Math.min(start + PAGE_BYTES, array.length);
      if (isZero(array, start, end) && isZero(this, offset + start, offset + end)) continue;
      set.call(this, array.subarray(start, end), offset + start);
    }
  };
  try {
    return await boot();
  } finally {
    Int8Array.prototype.set = set;
  }
}
