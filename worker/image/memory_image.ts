/**
 * A saved copy of the interpreter's Wasm linear memory, and the differences from it.
 *
 * Putting 30 MB back costs one memory copy whatever the request did, since nothing tells which
 * bytes it wrote (no dirty-page tracking reaches JavaScript). About half of a fresh
 * interpreter's pages are zero, and filling those is cheaper than copying them: the image keeps
 * its non-zero pages only, in runs, and fills the rest (1.2 ms against 1.8 ms for one 30 MB copy,
 * measured here).
 *
 * @module
 */

import { deflateRawSync, inflateRawSync } from "node:zlib";
import { PAGE_BYTES, PageScanner } from "./page_scan.ts";

/** A run of pages, `[start, end)` in bytes. */
type Run = readonly [number, number];

/**
 * Buffers of patches that were resumed or dropped, kept to hold the next ones. Fresh memory costs
 * its first touch: 3.3 ms per MB on this host's VM (measured), against 0.07 ms to copy into
 * memory already touched; and parking usually follows a resume of about the same size.
 */
const spareBuffers: Uint8Array[] = [];
const MAX_SPARE_BYTES = 64 << 20;

/**
 * A buffer of `bytes`, from the spare ones when one is big enough. A new one has room for a
 * quarter more (a session's changes grow a little from one park to the next); its pages are
 * touched only as they are written.
 */
function patchBuffer(bytes: number): Uint8Array {
  let best = -1;
  spareBuffers.forEach((buffer, i) => {
    // Not one much bigger: it would hold on to memory the patch does not need.
    const fits = buffer.byteLength >= bytes && buffer.byteLength <= 2 * bytes + PAGE_BYTES;
    if (fits && (best < 0 || buffer.byteLength < spareBuffers[best].byteLength)) best = i;
  });
  const buffer = best < 0
    ? new Uint8Array(Math.ceil((bytes * 1.25) / PAGE_BYTES) * PAGE_BYTES)
    : spareBuffers.splice(best, 1)[0];
  return buffer.subarray(0, bytes);
}

/**
 * Compression must save this share at least to be kept: below, the time to inflate the patch
 * on every resume buys too little (Python heap pages deflate to 30-55% at level 1, measured).
 */
const WORTH_COMPRESSING = 0.8;

/** The pages of memory that differ from an image, with their contents. */
export class MemoryPatch {
  #data: Uint8Array;
  #compressed = false;

  constructor(
    /** Byte length of the memory the patch was taken from. */
    readonly byteLength: number,
    /** The runs of pages held, as `[first, end)` page indices one after the other, ascending. */
    readonly runs: Uint32Array,
    /** The pages' contents, one after the other. */
    data: Uint8Array,
  ) {
    this.#data = data;
  }

  /** The pages' contents, one after the other (inflated if the patch is compressed). */
  get data(): Uint8Array {
    return this.#compressed ? inflateRawSync(this.#data) : this.#data;
  }

  /** Bytes of the pages' contents, as `data` gives them. */
  get dataBytes(): number {
    let pages = 0;
    for (let i = 0; i < this.runs.length; i += 2) pages += this.runs[i + 1] - this.runs[i];
    return pages * PAGE_BYTES;
  }

  get compressed(): boolean {
    return this.#compressed;
  }

  /** Deflates the contents if that saves enough; whether it did. */
  compress(): boolean {
    if (this.#compressed) return true;
    const deflated = deflateRawSync(this.#data, { level: 1 });
    if (deflated.byteLength > this.#data.byteLength * WORTH_COMPRESSING) return false;
    this.release();
    this.#data = deflated;
    this.#compressed = true;
    return true;
  }

  /** The patch is no longer needed: its buffer may hold the next one. */
  release(): void {
    if (this.#compressed) return;
    const buffer = new Uint8Array(this.#data.buffer);
    this.#data = new Uint8Array(0);
    const spare = spareBuffers.reduce((n, b) => n + b.byteLength, 0);
    if (spare + buffer.byteLength <= MAX_SPARE_BYTES) spareBuffers.push(buffer);
  }

  /** Writes the pages over `heap`, which holds the image the patch was taken against. */
  applyTo(heap: Uint8Array): void {
    const data = this.data;
    let from = 0;
    for (let i = 0; i < this.runs.length; i += 2) {
      const bytes = (this.runs[i + 1] - this.runs[i]) * PAGE_BYTES;
      heap.set(data.subarray(from, from + bytes), this.runs[i] * PAGE_BYTES);
      from += bytes;
    }
  }

  /** Bytes held. */
  get bytes(): number {
    return this.#data.byteLength + this.runs.byteLength;
  }
}

/** The runs of equal flags in `flags` (one a page), as byte ranges. */
function runsOf(flags: Uint8Array, wanted: boolean): Run[] {
  const runs: Run[] = [];
  let start = -1;
  for (let page = 0; page <= flags.length; page++) {
    const match = page < flags.length && (flags[page] !== 0) === wanted;
    if (match && start < 0) start = page;
    if (!match && start >= 0) {
      runs.push([start * PAGE_BYTES, page * PAGE_BYTES]);
      start = -1;
    }
  }
  return runs;
}

export class MemoryImage {
  /**
   * The image, at the same offsets as in the interpreter's memory, in the scanner's own memory
   * (whose pages never written, the zero ones, take no resident memory).
   */
  readonly #scanner: PageScanner;
  /** Runs of non-zero pages, copied back on restore. */
  readonly #copied: Run[];
  /** Runs of zero pages, filled on restore. */
  readonly #zeroed: Run[];

  private constructor(readonly byteLength: number, memory: WebAssembly.Memory) {
    const pages = byteLength / PAGE_BYTES;
    this.#scanner = new PageScanner(memory);
    const image = this.#scanner.reserve(byteLength + pages);
    const nonZero = this.#scanner.nonZero(0, pages, byteLength);
    this.#copied = runsOf(nonZero, true);
    this.#zeroed = runsOf(nonZero, false);
    const heap = new Uint8Array(memory.buffer);
    for (const [start, end] of this.#copied) image.set(heap.subarray(start, end), start);
  }

  /** Copies the interpreter's whole Wasm memory. */
  static take(memory: WebAssembly.Memory): MemoryImage {
    return new MemoryImage(memory.buffer.byteLength, memory);
  }

  /** The image's bytes and where they go, for a digest that tells identical images. */
  digestInput(): Uint8Array[] {
    const image = this.#scanner.reserve(0);
    return this.#copied.flatMap(([start, end]) => [
      new Uint8Array(Uint32Array.of(start, end).buffer),
      image.subarray(start, end),
    ]);
  }

  /** Bytes this image keeps. */
  get bytes(): number {
    return this.#copied.reduce((sum, [start, end]) => sum + end - start, 0);
  }

  /**
   * Puts the image back over `heap`. Memory that grew since is zeroed: Wasm memory never
   * shrinks, and the allocator, put back too, takes it for free space.
   */
  restoreTo(heap: Uint8Array): void {
    const image = this.#scanner.reserve(0);
    for (const [start, end] of this.#copied) heap.set(image.subarray(start, end), start);
    for (const [start, end] of this.#zeroed) heap.fill(0, start, end);
    if (heap.byteLength > this.byteLength) heap.fill(0, this.byteLength);
  }

  /** The pages of `heap` that differ from this image, grown memory included. */
  diff(heap: Uint8Array): MemoryPatch {
    const imagePages = this.byteLength / PAGE_BYTES;
    const heapPages = heap.byteLength / PAGE_BYTES;
    // The flags go past the image in the scanner's memory.
    this.#scanner.reserve(this.byteLength + heapPages);
    const runs = runsOf(this.#scanner.differ(0, 0, imagePages, this.byteLength), true);
    if (heapPages > imagePages) {
      const grown = this.#scanner.nonZero(this.byteLength, heapPages - imagePages, this.byteLength);
      runs.push(
        ...runsOf(grown, true).map(([start, end]): Run => [
          start + this.byteLength,
          end + this.byteLength,
        ]),
      );
    }
    const data = patchBuffer(runs.reduce((n, [start, end]) => n + end - start, 0));
    let at = 0;
    for (const [start, end] of runs) {
      data.set(heap.subarray(start, end), at);
      at += end - start;
    }
    const pages = runs.flatMap(([start, end]) => [start / PAGE_BYTES, end / PAGE_BYTES]);
    return new MemoryPatch(heap.byteLength, Uint32Array.from(pages), data);
  }
}
