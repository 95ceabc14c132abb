/**
 * The Wasm page scanner of the memory image, against a plain loop: which pages differ, which
 * are zero, for changes of one byte anywhere in a page (its first and last bytes included).
 */

import assert from "node:assert/strict";
import { PAGE_BYTES, PageScanner } from "../worker/image/page_scan.ts";

const PAGES = 64;

function plainFlags(a: Uint8Array, b: Uint8Array | undefined, pages: number): number[] {
  return Array.from({ length: pages }, (_, page) => {
    for (let i = page * PAGE_BYTES; i < (page + 1) * PAGE_BYTES; i++) {
      if (b === undefined ? a[i] !== 0 : a[i] !== b[i]) return 1;
    }
    return 0;
  });
}

Deno.test("the page scanner finds every page that differs, by one byte anywhere", () => {
  const memory = new WebAssembly.Memory({ initial: (PAGES * PAGE_BYTES) / 65536 });
  const heap = new Uint8Array(memory.buffer);
  crypto.getRandomValues(heap.subarray(0, 65536));
  for (let i = 65536; i < heap.length; i += 65536) heap.copyWithin(i, 0, 65536);
  const scanner = new PageScanner(memory);
  const image = scanner.reserve(heap.length + PAGES);
  image.set(heap);
  // Changed: a first byte, a last byte, a middle byte, a sign bit (-0 against +0), a whole page.
  const changes = [0, 3 * PAGE_BYTES - 1, 7 * PAGE_BYTES + 1000, 20 * PAGE_BYTES + 7];
  for (const at of changes) heap[at] ^= 0x80;
  heap.fill(9, 40 * PAGE_BYTES, 41 * PAGE_BYTES);
  const flags = [...scanner.differ(0, 0, PAGES, heap.length)];
  assert.deepEqual(flags, plainFlags(heap, image, PAGES));
  assert.deepEqual(flags.flatMap((f, page) => f ? [page] : []), [0, 2, 7, 20, 40]);
  // Offsets: the second half of the heap against the first half of the image.
  const half = PAGES / 2;
  assert.deepEqual(
    [...scanner.differ(half * PAGE_BYTES, 0, half, heap.length)],
    plainFlags(heap.subarray(half * PAGE_BYTES), image, half),
  );
});

Deno.test("the page scanner tells zero pages from the others", () => {
  const memory = new WebAssembly.Memory({ initial: (PAGES * PAGE_BYTES) / 65536 });
  const heap = new Uint8Array(memory.buffer);
  for (const at of [5, 2 * PAGE_BYTES - 1, 9 * PAGE_BYTES + 2048, PAGES * PAGE_BYTES - 1]) {
    heap[at] = 1;
  }
  const scanner = new PageScanner(memory);
  scanner.reserve(PAGES);
  const flags = [...scanner.nonZero(0, PAGES, 0)];
  assert.deepEqual(flags, plainFlags(heap, undefined, PAGES));
  assert.deepEqual(flags.flatMap((f, page) => f ? [page] : []), [0, 1, 9, PAGES - 1]);
  assert.deepEqual([...scanner.nonZero(0, 0, 0)], []);
});
