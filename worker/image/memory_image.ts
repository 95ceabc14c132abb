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

/** The page size of images and patches: a patch holds only the 4 KiB pages that differ. */
export const PAGE_BYTES = 4096;
const PAGE_WORDS = PAGE_BYTES / 4;

/** A run of pages, `[start, end)` in bytes. */
type Run = readonly [number, number];

function isZeroPage(words: Int32Array, page: number): boolean {
  const end = (page + 1) * PAGE_WORDS;
  for (let i = page * PAGE_WORDS; i < end; i++) if (words[i] !== 0) return false;
  return true;
}

function samePage(a: Int32Array, b: Int32Array, aPage: number, bPage: number): boolean {
  const aStart = aPage * PAGE_WORDS;
  const bStart = bPage * PAGE_WORDS;
  for (let i = 0; i < PAGE_WORDS; i++) if (a[aStart + i] !== b[bStart + i]) return false;
  return true;
}

/** The pages of memory that differ from an image, with their contents. */
export class MemoryPatch {
  constructor(
    /** Byte length of the memory the patch was taken from. */
    readonly byteLength: number,
    /** Index of each page held, ascending. */
    readonly pages: Uint32Array,
    /** The pages' contents, one after the other. */
    readonly data: Uint8Array,
  ) {}

  /** Writes the pages over `heap`, which holds the image the patch was taken against. */
  applyTo(heap: Uint8Array): void {
    for (let i = 0; i < this.pages.length; i++) {
      heap.set(
        this.data.subarray(i * PAGE_BYTES, (i + 1) * PAGE_BYTES),
        this.pages[i] * PAGE_BYTES,
      );
    }
  }

  get bytes(): number {
    return this.data.byteLength + this.pages.byteLength;
  }
}

export class MemoryImage {
  /** Non-zero runs: where each goes, and its bytes. */
  readonly #copied: { start: number; bytes: Uint8Array }[] = [];
  /** Zero runs, filled on restore. */
  readonly #zeroed: Run[] = [];
  /** Page index to where its copy sits in `#copied` (or -1 for a zero page). */
  readonly #pageSource: Int32Array;

  private constructor(readonly byteLength: number, heap: Uint8Array) {
    const words = new Int32Array(heap.buffer, 0, byteLength / 4);
    const pages = byteLength / PAGE_BYTES;
    this.#pageSource = new Int32Array(pages);
    let runStart = 0;
    let runZero = pages > 0 && isZeroPage(words, 0);
    const close = (end: number) => {
      if (runZero) this.#zeroed.push([runStart * PAGE_BYTES, end * PAGE_BYTES]);
      else {
        this.#copied.push({
          start: runStart * PAGE_BYTES,
          bytes: heap.slice(runStart * PAGE_BYTES, end * PAGE_BYTES),
        });
      }
    };
    for (let page = 0; page < pages; page++) {
      const zero = isZeroPage(words, page);
      if (zero !== runZero) {
        close(page);
        runStart = page;
        runZero = zero;
      }
      this.#pageSource[page] = zero ? -1 : this.#copied.length;
    }
    if (pages > 0) close(pages);
  }

  /** Copies `heap` (the whole Wasm memory). */
  static take(heap: Uint8Array): MemoryImage {
    return new MemoryImage(heap.byteLength, heap);
  }

  /** The image's bytes and where they go, for a digest that tells identical images. */
  digestInput(): Uint8Array[] {
    return this.#copied.flatMap(({ start, bytes }) => [
      new Uint8Array(Uint32Array.of(start, bytes.byteLength).buffer),
      bytes,
    ]);
  }

  /** Bytes this image keeps. */
  get bytes(): number {
    return this.#copied.reduce((sum, run) => sum + run.bytes.byteLength, 0);
  }

  /**
   * Puts the image back over `heap`. Memory that grew since is zeroed: Wasm memory never
   * shrinks, and the allocator, put back too, takes it for free space.
   */
  restoreTo(heap: Uint8Array): void {
    for (const { start, bytes } of this.#copied) heap.set(bytes, start);
    for (const [start, end] of this.#zeroed) heap.fill(0, start, end);
    if (heap.byteLength > this.byteLength) heap.fill(0, this.byteLength);
  }

  /** The pages of `heap` that differ from this image, grown memory included. */
  diff(heap: Uint8Array): MemoryPatch {
    const current = new Int32Array(heap.buffer, 0, heap.byteLength / 4);
    const changed: number[] = [];
    const imagePages = this.byteLength / PAGE_BYTES;
    for (let page = 0; page < heap.byteLength / PAGE_BYTES; page++) {
      const source = page < imagePages ? this.#pageSource[page] : -1;
      if (source === -1) {
        if (!isZeroPage(current, page)) changed.push(page);
        continue;
      }
      const run = this.#copied[source];
      const saved = new Int32Array(
        run.bytes.buffer,
        run.bytes.byteOffset,
        run.bytes.byteLength / 4,
      );
      if (!samePage(current, saved, page, page - run.start / PAGE_BYTES)) changed.push(page);
    }
    const data = new Uint8Array(changed.length * PAGE_BYTES);
    changed.forEach((page, i) =>
      data.set(heap.subarray(page * PAGE_BYTES, (page + 1) * PAGE_BYTES), i * PAGE_BYTES)
    );
    return new MemoryPatch(heap.byteLength, Uint32Array.from(changed), data);
  }
}
