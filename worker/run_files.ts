/**
 * A request's files: written into the run directory before the code runs, and the files the
 * code created or changed there read back after it. Done on the JavaScript side of
 * Emscripten's file system: through Python, a 10 MiB file in and out cost about 1.5 s (JSON
 * and base64 in Wasm, and a Wasm heap grown by four copies); here it is a native base64 and
 * one copy into the file system.
 *
 * @module
 */

import type { InputFile, OutputFile } from "../lib/protocol.ts";
import { ENOSPC } from "./fs_quota.ts";

/** A node of Emscripten's file system, as far as the files read back use it. */
interface FsNode {
  mode: number;
  /** A file's bytes (a typed array in MEMFS), or a folder's entries by name. */
  contents?: unknown;
  usedBytes?: number;
  /** What is mounted on this folder, if anything. */
  mounted?: { root: FsNode } | null;
}

/** The part of Emscripten's FS API used here. */
interface EmscriptenFs {
  mkdirTree(path: string): void;
  writeFile(path: string, data: Uint8Array): void;
  readFile(path: string): Uint8Array;
  lookupPath(path: string, options: { follow: boolean }): { node: FsNode };
  isDir(mode: number): boolean;
  isLink(mode: number): boolean;
  isFile(mode: number): boolean;
}

/** The run directory every request works in; worker/python/workdir.py makes it current. */
export const RUN_DIRECTORY = "/tmp/pyodide-pool/run";

/** What was written before a run, to leave unchanged files out of the result. */
export type GivenFiles = Map<string, Uint8Array>;

export class RunFiles {
  constructor(
    private readonly fs: EmscriptenFs,
    /** Largest file returned with its content. */
    private readonly maxFileBytes: number,
    /** Most bytes of content returned in all; the files past it come back without content. */
    private readonly maxTotalBytes: number,
  ) {}

  /**
   * Writes the request's files (paths were checked at the edge: relative, no `..`), noting
   * each in `given`. Throws a readable error when two paths collide ("a" and "a/b").
   */
  put(files: InputFile[], given: GivenFiles): void {
    for (const { path, content_b64 } of files) {
      const content = Uint8Array.fromBase64(content_b64);
      const target = `${RUN_DIRECTORY}/${path}`;
      try {
        this.fs.mkdirTree(target.slice(0, target.lastIndexOf("/")));
        this.fs.writeFile(target, content);
      } catch (error) {
        // Emscripten's ErrnoError carries only a number.
        const errno = (error as { errno?: number }).errno;
        if (errno === ENOSPC) {
          throw new Error(
            `cannot write ${JSON.stringify(path)}: the request's files take more room than the ` +
              `file system quota gives a request (--max-fs-mb)`,
          );
        }
        throw new Error(
          `cannot write ${JSON.stringify(path)}: a folder of that name, or a file where one ` +
            `of its folders should be, came earlier in files (errno ${errno})`,
        );
      }
      given.set(path, content);
    }
  }

  /**
   * A file's bytes, without a copy where MEMFS holds them in an array (`readFile` copies: the
   * copies of the files an answer returns, at once, were 90 MiB of a worker's peak).
   */
  #contentOf(node: FsNode, path: string): Uint8Array {
    const { contents, usedBytes } = node;
    if (!ArrayBuffer.isView(contents) || usedBytes === undefined) return this.fs.readFile(path);
    return new Uint8Array(contents.buffer, contents.byteOffset, usedBytes);
  }

  /**
   * Files created or changed in the run directory, sorted by path, content capped. None if
   * the code removed the directory or put something else in its place (the reset then
   * taints the worker). Their paths count toward the bytes returned, as contents do (600
   * names of 1 MiB were a 600 MB answer): those past it are left out, and counted in
   * `omitted`.
   *
   * The walk goes from node to node, not by path: each path is looked up from the root, one
   * folder at a time, so 1,000 nested folders took 33 s to walk by path, past the request's
   * timeout. Only a link is looked up by its path (it names its target by path).
   */
  collect(given: GivenFiles): { files: OutputFile[]; omitted: number } {
    const changed: OutputFile[] = [];
    let omitted = 0;
    let root: FsNode;
    try {
      root = this.fs.lookupPath(RUN_DIRECTORY, { follow: false }).node;
    } catch {
      return { files: changed, omitted };
    }
    if (!this.fs.isDir(root.mode)) return { files: changed, omitted };
    let room = this.maxTotalBytes;
    const withoutContent = (path: string, size: number): OutputFile => ({
      path,
      size,
      content_b64: null,
      truncated: true,
    });
    const walk = (folder: FsNode, folderPath: string, prefix: string) => {
      const entries = (folder.mounted?.root ?? folder).contents as Record<string, FsNode>;
      for (const [name, entry] of Object.entries(entries)) {
        const full = `${folderPath}/${name}`;
        const relative = prefix + name;
        // Folders are walked, links to folders are not (a link may loop); links to files
        // are read, as Python's open() would.
        let node = entry;
        if (this.fs.isLink(entry.mode)) {
          try {
            node = this.fs.lookupPath(full, { follow: true }).node;
          } catch {
            continue; // a dangling link
          }
          if (this.fs.isDir(node.mode)) continue;
        }
        if (this.fs.isDir(node.mode)) {
          walk(node, full, `${relative}/`);
          continue;
        }
        if (!this.fs.isFile(node.mode)) continue;
        const before = given.get(relative);
        const content = () => this.#contentOf(node, full);
        // As the answer's JSON holds it (a control character takes 6 bytes there).
        const pathBytes = JSON.stringify(relative).length;
        if (pathBytes > room) {
          if (!sameBytes(before, content())) omitted++;
          continue;
        }
        room -= pathBytes;
        const size = node.usedBytes ?? 0;
        const fits = (bytes: number) => bytes <= this.maxFileBytes && bytes <= room;
        if (!fits(size) && before?.length !== size) {
          changed.push(withoutContent(relative, size));
          continue;
        }
        const bytes = content();
        if (sameBytes(before, bytes)) continue;
        if (!fits(bytes.length)) {
          changed.push(withoutContent(relative, bytes.length));
          continue;
        }
        room -= bytes.length;
        changed.push({ path: relative, size: bytes.length, content_b64: bytes.toBase64() });
      }
    };
    walk(root, RUN_DIRECTORY, "");
    changed.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
    return { files: changed, omitted };
  }
}

function sameBytes(a: Uint8Array | undefined, b: Uint8Array): boolean {
  if (a === undefined || a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
