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

/** The part of Emscripten's FS API used here. */
interface EmscriptenFs {
  mkdirTree(path: string): void;
  writeFile(path: string, data: Uint8Array): void;
  readFile(path: string): Uint8Array;
  lookupPath(path: string, options: { follow: boolean }): {
    node: { contents?: unknown; usedBytes?: number };
  };
  readdir(path: string): string[];
  stat(path: string): { mode: number; size: number };
  lstat(path: string): { mode: number };
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
  #contentOf(path: string): Uint8Array {
    const { node } = this.fs.lookupPath(path, { follow: true });
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
   */
  collect(given: GivenFiles): { files: OutputFile[]; omitted: number } {
    const changed: OutputFile[] = [];
    let omitted = 0;
    try {
      if (!this.fs.isDir(this.fs.lstat(RUN_DIRECTORY).mode)) return { files: changed, omitted };
    } catch {
      return { files: changed, omitted };
    }
    let room = this.maxTotalBytes;
    const withoutContent = (path: string, size: number): OutputFile => ({
      path,
      size,
      content_b64: null,
      truncated: true,
    });
    const walk = (folder: string, prefix: string) => {
      for (const name of this.fs.readdir(folder)) {
        if (name === "." || name === "..") continue;
        const full = `${folder}/${name}`;
        const relative = prefix + name;
        // Folders are walked, links to folders are not (a link may loop); links to files
        // are read, as Python's open() would.
        const isLink = this.fs.isLink(this.fs.lstat(full).mode);
        let stat;
        try {
          stat = this.fs.stat(full);
        } catch {
          continue; // a dangling link
        }
        if (this.fs.isDir(stat.mode)) {
          if (!isLink) walk(full, `${relative}/`);
          continue;
        }
        if (!this.fs.isFile(stat.mode)) continue;
        const before = given.get(relative);
        if (relative.length > room) {
          if (!sameBytes(before, this.#contentOf(full))) omitted++;
          continue;
        }
        room -= relative.length;
        const fits = (size: number) => size <= this.maxFileBytes && size <= room;
        if (!fits(stat.size) && before?.length !== stat.size) {
          changed.push(withoutContent(relative, stat.size));
          continue;
        }
        const content = this.#contentOf(full);
        if (sameBytes(before, content)) continue;
        if (!fits(content.length)) {
          changed.push(withoutContent(relative, content.length));
          continue;
        }
        room -= content.length;
        changed.push({ path: relative, size: content.length, content_b64: content.toBase64() });
      }
    };
    walk(RUN_DIRECTORY, "");
    changed.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
    return { files: changed, omitted };
  }
}

function sameBytes(a: Uint8Array | undefined, b: Uint8Array): boolean {
  if (a === undefined || a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
