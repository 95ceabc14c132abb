/**
 * Caps the bytes a request may hold in Emscripten's in-memory file system (MEMFS). File
 * contents live in JavaScript memory, outside the Wasm heap and its cap: without this, one
 * request wrote 48 files of 64 MiB to /tmp, and its worker's resident memory reached 3.3 GB.
 *
 * Every path that makes a file's contents larger goes through one of two MEMFS functions:
 * its `write` stream operation (writes, appends, writes past the end, `msync` of a mapping,
 * `FS.writeFile`) or `resizeFileStorage` (`truncate` and `ftruncate` up, `posix_fallocate`).
 * Both are wrapped here, whatever the isolation mode; a write that would
 * take the file system past the quota fails with ENOSPC, which Python sees as
 * `OSError: [Errno 28] No space left on device`.
 *
 * What counts is the size of every file whose contents are not the baseline's (the pristine
 * interpreter's files: the standard library, the runtime, loaded packages), reachable from the
 * tree or from an open descriptor (a removed file still open keeps its contents). A baseline
 * file that is written gets contents of its own (copied first, in fs_image.ts), so it then
 * counts whole. The files are counted as a request starts; from then on growth is added as it
 * happens and shrinking is not: the sum is an upper bound, and only when it would pass the quota
 * are the files counted again. So removing a file frees its room without a hook on each way a
 * file can go (unlink, rename over it, the image put back).
 *
 * @module
 */

/** The parts of an Emscripten file system node read here. */
interface FsNode {
  usedBytes?: number;
  /**
   * A file's bytes (an Int8Array when written from the Wasm memory, which is one), or a
   * folder's entries.
   */
  contents?: ArrayBufferView | Record<string, FsNode> | null;
  mounted: { root: FsNode } | null;
}

/** The part of Emscripten's FS object used here. */
export interface QuotaFs {
  root: FsNode;
  streams: ({ node: FsNode } | null | undefined)[];
  ErrnoError: new (errno: number) => Error;
}

type WriteOp = (
  stream: { node: FsNode },
  buffer: Uint8Array,
  offset: number,
  length: number,
  position: number,
  canOwn?: boolean,
) => number;

/** MEMFS's functions that make file contents larger, which the quota wraps. */
export interface GrowingMemFs {
  stream_ops: { write: WriteOp };
  ops_table: { file: { stream: { write: WriteOp } } } | null;
  resizeFileStorage(node: FsNode, size: number): void;
}

/**
 * Emscripten's errno for "No space left on device": its errors are numbered as in WASI, where
 * 28, Linux's ENOSPC, is EINVAL. Python's `errno.ENOSPC` is 51 too.
 */
export const ENOSPC = 51;

export class FsQuota {
  /** Contents arrays of the baseline's files, which never count. */
  #baseline = new WeakSet<ArrayBufferView>();
  /** At least the bytes held beyond the baseline (see the module's comment). */
  #bound = 0;
  #enforced = false;
  #refused = false;

  /** Wraps `memfs`'s growing functions; call once, before the first file is written by a run. */
  constructor(
    private readonly fs: QuotaFs,
    memfs: GrowingMemFs,
    /** Bytes of contents beyond the baseline that a request may hold. */
    readonly limitBytes: number,
  ) {
    const write = memfs.stream_ops.write;
    const cappedWrite: WriteOp = (stream, buffer, offset, length, position, canOwn) => {
      this.#grow(stream.node, position + length);
      return write(stream, buffer, offset, length, position, canOwn);
    };
    // msync calls the first; file streams call the second.
    memfs.stream_ops.write = cappedWrite;
    if (memfs.ops_table) memfs.ops_table.file.stream.write = cappedWrite;
    const resize = memfs.resizeFileStorage;
    memfs.resizeFileStorage = (node, size) => {
      this.#grow(node, size);
      resize(node, size);
    };
  }

  /**
   * Takes the files as they are now as the baseline: at start, and after packages load (their
   * files are the pool's, not the request's).
   */
  rebase(): void {
    this.#walk((node) => {
      if (ArrayBuffer.isView(node.contents)) this.#baseline.add(node.contents);
    });
    this.#bound = 0;
  }

  /**
   * From now until `close`, writes past the quota fail: while a request's files and code run.
   * Counts the files first: what the request starts with (a resumed session's files) counts.
   */
  open(): void {
    this.#bound = this.measure();
    this.#enforced = true;
    this.#refused = false;
  }

  /**
   * Ends the quota's enforcement (the isolation reset that follows must not fail for want of
   * room); whether a write was refused since `open`.
   */
  close(): boolean {
    this.#enforced = false;
    return this.#refused;
  }

  /** Bytes of file contents held beyond the baseline, counted now. */
  measure(): number {
    let bytes = 0;
    this.#walk((node) => {
      if (ArrayBuffer.isView(node.contents) && !this.#baseline.has(node.contents)) {
        bytes += node.usedBytes ?? 0;
      }
    });
    return bytes;
  }

  /** Called before `node`'s contents grow to `size` bytes; throws ENOSPC past the quota. */
  #grow(node: FsNode, size: number): void {
    const grown = size - (node.usedBytes ?? 0);
    if (grown <= 0) return;
    if (this.#enforced && this.#bound + grown > this.limitBytes) {
      this.#bound = this.measure();
      if (this.#bound + grown > this.limitBytes) {
        this.#refused = true;
        throw new this.fs.ErrnoError(ENOSPC);
      }
    }
    this.#bound += grown;
  }

  /** Visits every node reachable from the tree or from an open descriptor, once. */
  #walk(visit: (node: FsNode) => void): void {
    const seen = new Set<FsNode>();
    const pending = [this.fs.root];
    for (const stream of this.fs.streams) if (stream) pending.push(stream.node);
    for (let node = pending.pop(); node !== undefined; node = pending.pop()) {
      if (seen.has(node)) continue;
      seen.add(node);
      visit(node);
      if (node.mounted) pending.push(node.mounted.root);
      const contents = node.contents;
      // A loop: spreading a large folder's entries as arguments could overflow the stack.
      if (contents && !ArrayBuffer.isView(contents)) {
        for (const entry of Object.values(contents)) pending.push(entry);
      }
    }
  }
}

/** Emscripten's errno for "File name too long" (numbered as in WASI; Python's is 37 too). */
export const ENAMETOOLONG = 37;
/** Linux's longest file name (what `statvfs` reports here) and longest link target, in bytes. */
const NAME_MAX = 255;
const PATH_MAX = 4096;

/** The part of Emscripten's FS object whose names are limited. */
export interface NamingFs {
  mknod(path: string, mode: number, dev: number): unknown;
  symlink(target: string, path: string): unknown;
  rename(from: string, to: string): unknown;
  ErrnoError: new (errno: number) => Error;
}

/** Whether `text` takes more than `max` bytes of UTF-8 (a character takes one to three). */
const longerThan = (text: string, max: number) =>
  text.length > max || (text.length * 3 > max && new TextEncoder().encode(text).byteLength > max);

/**
 * Limits file names and link targets as Linux does. MEMFS takes any length, and the quota
 * counts contents only: 2,000 links to 1 MiB targets, or 1,500 files with 1 MiB names, took
 * a worker's memory past 2 GB. Every file, folder and link is made by `mknod` or `symlink`,
 * and named again only by `rename`.
 */
export function limitNames(fs: NamingFs): void {
  const checkName = (path: string) => {
    const name = path.slice(path.lastIndexOf("/") + 1);
    if (longerThan(name, NAME_MAX)) throw new fs.ErrnoError(ENAMETOOLONG);
  };
  const { mknod, symlink, rename } = fs;
  fs.mknod = (path, mode, dev) => {
    checkName(path);
    return mknod.call(fs, path, mode, dev);
  };
  fs.symlink = (target, path) => {
    if (longerThan(target, PATH_MAX)) throw new fs.ErrnoError(ENAMETOOLONG);
    checkName(path);
    return symlink.call(fs, target, path);
  };
  fs.rename = (from, to) => {
    checkName(to);
    return rename.call(fs, from, to);
  };
}
