/**
 * The snapshot copy that skips zero pages (worker/sparse_restore.ts). Every pool test restores
 * real interpreters through it; these pin the page rules and the clean-up.
 */

import assert from "node:assert/strict";
import { restoringSparsely } from "../worker/sparse_restore.ts";

const PAGE = 65536;

Deno.test("the snapshot copy skips pages zero on both sides and copies every other page", async () => {
  const snapshot = new Uint8Array(4 * PAGE);
  snapshot[PAGE + 7] = 1; // page 1: data in the snapshot
  snapshot.fill(9, 3 * PAGE, 3 * PAGE + 10); // page 3 too
  const memory = new Int8Array(5 * PAGE);
  memory[3 * PAGE + 5] = 4; // page 2 of the snapshot: zero there, but written by the module
  // The copies that reach the real `set`, as [destination offset, bytes].
  const original = Int8Array.prototype.set;
  const copies: number[][] = [];
  Int8Array.prototype.set = function (this: Int8Array, array: ArrayLike<number>, offset = 0) {
    copies.push([offset, array.length]);
    return original.call(this, array, offset);
  };
  try {
    // Like Pyodide: the snapshot is a promise that the boot awaits before it copies.
    const reading = Promise.resolve(snapshot);
    await restoringSparsely(reading, async () => memory.set(await reading, PAGE));
  } finally {
    Int8Array.prototype.set = original;
  }
  assert.deepEqual(new Uint8Array(memory.buffer, PAGE), snapshot);
  assert.deepEqual(copies, [[2 * PAGE, PAGE], [3 * PAGE, PAGE], [4 * PAGE, PAGE]]);
});

Deno.test("other copies are untouched, and Int8Array's set is put back even when boot fails", async () => {
  const original = Int8Array.prototype.set;
  const snapshot = new Uint8Array(PAGE);
  await assert.rejects(
    restoringSparsely(snapshot, () => {
      const other = new Int8Array(PAGE);
      other.set([1, 2, 3], 1);
      assert.deepEqual([...other.subarray(0, 4)], [0, 1, 2, 3]);
      return Promise.reject(new Error("boot failed"));
    }),
    /boot failed/,
  );
  assert.equal(Int8Array.prototype.set, original);
});
