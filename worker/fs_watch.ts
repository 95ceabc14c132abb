/**
 * Tells which of the isolation baseline's folders and files a request changed, from the
 * JavaScript side of Emscripten's file system: a property read per path, where checking from
 * Python (an `os.stat` per path) cost about 40 us a request.
 *
 * @module
 */

/** The parts of an Emscripten MEMFS node read here. */
interface FsNode {
  ctime: number;
  usedBytes?: number;
}

interface EmscriptenFs {
  lookupPath(path: string): { node: FsNode };
}

interface Watched {
  path: string;
  node: FsNode;
  size?: number;
}

/**
 * A change to a file or folder sets its node's `ctime` to the current time; Python cannot
 * set `ctime` (`os.utime` sets only atime and mtime), so a watched node marked with a ctime
 * of 0 shows any change for certain, even one within the same millisecond as the marking.
 * Truncation leaves the times as they were, so file sizes are compared too. A folder that
 * was removed or replaced changed its parent's ctime, and every folder is watched.
 */
const UNCHANGED = 0;

export class FsWatch {
  #watched: Watched[] = [];

  constructor(private readonly fs: EmscriptenFs) {}

  /**
   * Watches `paths` from now on, as they are now. A path that no longer exists is left out:
   * its removal already tainted the worker.
   */
  mark(paths: string[]): void {
    this.#watched = [];
    for (const path of paths) {
      let node: FsNode;
      try {
        node = this.fs.lookupPath(path).node;
      } catch {
        continue;
      }
      node.ctime = UNCHANGED;
      this.#watched.push({ path, node, size: node.usedBytes });
    }
  }

  /** The watched paths changed since `mark`. */
  changed(): string[] {
    const changed: string[] = [];
    for (const { path, node, size } of this.#watched) {
      if (node.ctime !== UNCHANGED || node.usedBytes !== size) changed.push(path);
    }
    return changed;
  }
}
