/**
 * Compares and scans memory pages with Wasm SIMD: which pages of the interpreter's memory differ
 * from a saved image, and which are all zero. A JavaScript loop over 32-bit words took 12-20 ms
 * for the 30 MB of a worker's memory (measured), and parking a session does this on the path of
 * another owner's request; 16 bytes an instruction, it is bound by memory bandwidth.
 *
 * The module is written here as bytes: it is small, no Wasm toolchain is installed (and none
 * may load code at run time), and `page_scan_test.ts` checks it against the plain loop. It
 * imports two memories (multi-memory): the interpreter's (0) and the image's (1), where it also
 * writes one flag byte per page.
 *
 * @module
 */

/** The page size of images and patches: a patch holds only the 4 KiB pages that differ. */
export const PAGE_BYTES = 4096;

/** LEB128 of an unsigned 32-bit integer. */
function leb(value: number): number[] {
  const bytes: number[] = [];
  do {
    let byte = value & 0x7f;
    value >>>= 7;
    if (value !== 0) byte |= 0x80;
    bytes.push(byte);
  } while (value !== 0);
  return bytes;
}

/** Signed LEB128, for `i32.const`. */
function sleb(value: number): number[] {
  const bytes: number[] = [];
  for (;;) {
    const byte = value & 0x7f;
    value >>= 7;
    if ((value === 0 && !(byte & 0x40)) || (value === -1 && byte & 0x40)) {
      bytes.push(byte);
      return bytes;
    }
    bytes.push(byte | 0x80);
  }
}

const name = (text: string) => [...leb(text.length), ...new TextEncoder().encode(text)];
const vector = (items: number[][]) => [...leb(items.length), ...items.flat()];
const section = (id: number, body: number[]) => [id, ...leb(body.length), ...body];

const I32 = 0x7f;
const V128 = 0x7b;
const op = {
  block: [0x02, 0x40],
  loop: [0x03, 0x40],
  end: [0x0b],
  br: (depth: number) => [0x0c, depth],
  brIf: (depth: number) => [0x0d, depth],
  get: (local: number) => [0x20, local],
  set: (local: number) => [0x21, local],
  i32: (value: number) => [0x41, ...sleb(value)],
  add: [0x6a],
  sub: [0x6b],
  ltU: [0x49],
  eqz: [0x45],
  /** i32.store8 into memory 1. */
  store8: [0x3a, 0x40, 0x01, 0x00],
  /** v128.load from memory `memory`, at `offset` past the address. */
  load: (memory: number, offset: number) =>
    memory === 0 ? [0xfd, 0x00, 0x04, ...leb(offset)] : [0xfd, 0x00, 0x44, memory, ...leb(offset)],
  zero: [0xfd, 0x0c, ...new Array(16).fill(0)],
  or: [0xfd, 0x50],
  xor: [0xfd, 0x51],
  anyTrue: [0xfd, 0x53],
};

/** Bytes read per turn of the inner loops. */
const UNROLL = 4;

/**
 * One flag per page into memory 1 at `out` (1: differs, or is not zero), for `pages` pages from
 * `heap` in memory 0; `chunk(i)` ORs the i-th 16 bytes into the accumulator (local `acc`).
 */
function pageLoop(
  params: { heap: number; image?: number; pages: number; out: number },
  locals: { acc: number; end: number },
): number[] {
  const { heap, image, pages, out } = params;
  const { acc, end } = locals;
  const chunk = (offset: number) =>
    image === undefined
      ? [...op.get(acc), ...op.get(heap), ...op.load(0, offset), ...op.or, ...op.set(acc)]
      : [
        ...op.get(acc),
        ...op.get(heap),
        ...op.load(0, offset),
        ...op.get(image),
        ...op.load(1, offset),
        ...op.xor,
        ...op.or,
        ...op.set(acc),
      ];
  const advance = (
    local: number,
  ) => [...op.get(local), ...op.i32(16 * UNROLL), ...op.add, ...op.set(local)];
  return [
    ...op.block,
    ...op.loop,
    ...op.get(pages),
    ...op.eqz,
    ...op.brIf(1),
    ...op.zero,
    ...op.set(acc),
    ...op.get(heap),
    ...op.i32(PAGE_BYTES),
    ...op.add,
    ...op.set(end),
    ...op.loop,
    ...Array.from({ length: UNROLL }, (_, i) => chunk(16 * i)).flat(),
    ...advance(heap),
    ...(image === undefined ? [] : advance(image)),
    ...op.get(heap),
    ...op.get(end),
    ...op.ltU,
    ...op.brIf(0),
    ...op.end,
    ...op.get(out),
    ...op.get(acc),
    ...op.anyTrue,
    ...op.store8,
    ...op.get(out),
    ...op.i32(1),
    ...op.add,
    ...op.set(out),
    ...op.get(pages),
    ...op.i32(1),
    ...op.sub,
    ...op.set(pages),
    ...op.br(0),
    ...op.end,
    ...op.end,
    ...op.end,
  ];
}

const body = (locals: number[][], code: number[]) => {
  const content = [...vector(locals), ...code];
  return [...leb(content.length), ...content];
};

const MODULE = new Uint8Array([
  0x00,
  0x61,
  0x73,
  0x6d,
  0x01,
  0x00,
  0x00,
  0x00,
  // Types: differ(heap, image, pages, out), zero(heap, pages, out).
  ...section(1, vector([[0x60, 4, I32, I32, I32, I32, 0], [0x60, 3, I32, I32, I32, 0]])),
  // Imports: e.heap (memory 0), e.image (memory 1), no minimum.
  ...section(
    2,
    vector([
      [...name("e"), ...name("heap"), 0x02, 0x00, 0x00],
      [...name("e"), ...name("image"), 0x02, 0x00, 0x00],
    ]),
  ),
  ...section(3, vector([[0], [1]])),
  ...section(7, vector([[...name("differ"), 0x00, 0], [...name("zero"), 0x00, 1]])),
  ...section(
    10,
    vector([
      body(
        [[1, V128], [1, I32]],
        pageLoop({ heap: 0, image: 1, pages: 2, out: 3 }, { acc: 4, end: 5 }),
      ),
      body([[1, V128], [1, I32]], pageLoop({ heap: 0, pages: 1, out: 2 }, { acc: 3, end: 4 })),
    ]),
  ),
]);

interface Exports {
  differ(heap: number, image: number, pages: number, out: number): void;
  zero(heap: number, pages: number, out: number): void;
}

// Compiled, and the constructor kept, as this module loads: before worker/sandbox.ts guards
// code loading, which refuses instances that import the interpreter's memory.
const compiled = new WebAssembly.Module(MODULE);
const { Instance } = WebAssembly;

/** A scanner over the interpreter's memory `heap`, with a memory of its own for an image. */
export class PageScanner {
  readonly #image: WebAssembly.Memory;
  readonly #exports: Exports;

  constructor(heap: WebAssembly.Memory) {
    this.#image = new WebAssembly.Memory({ initial: 1 });
    const instance = new Instance(compiled, { e: { heap, image: this.#image } });
    this.#exports = instance.exports as unknown as Exports;
  }

  /**
   * Room for `bytes` in the scanner's memory, as a view from its start: where images are kept
   * for the scanner to compare against. Growing it invalidates earlier views.
   */
  reserve(bytes: number): Uint8Array {
    const needed = Math.ceil(bytes / 65536) - this.#image.buffer.byteLength / 65536;
    if (needed > 0) this.#image.grow(needed);
    return new Uint8Array(this.#image.buffer);
  }

  /**
   * Which of `pages` pages differ, from `heap` in the interpreter's memory and `image` in the
   * scanner's; `flags` (past the images, in the scanner's memory) receives one byte a page.
   */
  differ(heap: number, image: number, pages: number, flags: number): Uint8Array {
    this.#exports.differ(heap, image, pages, flags);
    return new Uint8Array(this.#image.buffer, flags, pages);
  }

  /** Which of `pages` pages from `heap` are not all zero, one byte a page at `flags`. */
  nonZero(heap: number, pages: number, flags: number): Uint8Array {
    this.#exports.zero(heap, pages, flags);
    return new Uint8Array(this.#image.buffer, flags, pages);
  }
}
