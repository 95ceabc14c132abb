/**
 * A saved state of Emscripten's in-memory file system (MEMFS), which lives on the JavaScript
 * side, outside the Wasm memory: every node with its metadata and contents, the folders'
 * entries, the open file descriptors, the working directory and the inode counter.
 *
 * Nothing is copied: a state holds the node objects and their contents arrays, and a write into
 * contents that a state holds copies them first (`protectContents`). So a check compares
 * identities and numbers, node by node (a few microseconds for the few hundred nodes of a
 * worker), and putting a state back assigns the saved values again.
 *
 * @module
 */

/** The parts of an Emscripten file system node read and written here. */
interface FsNode {
  name: string;
  parent: FsNode;
  mode: number;
  rdev: number;
  atime: number;
  mtime: number;
  ctime: number;
  usedBytes?: number;
  /** File contents: a Uint8Array, or an Int8Array for a file written in one go. */
  contents?: Uint8Array | Int8Array | Record<string, FsNode>;
  link?: string;
  mounted: { root: FsNode } | null;
}

interface FsStream {
  node: FsNode;
  shared: { position: number; flags: number };
}

/** The part of Emscripten's FS object used here. */
export interface EmscriptenFs {
  root: FsNode;
  streams: (FsStream | null | undefined)[];
  currentPath: string;
  nextInode: number;
  nameTable: (FsNode | null | undefined)[];
  hashAddNode(node: FsNode): void;
}

type WriteOp = (stream: FsStream, ...rest: unknown[]) => number;

/** MEMFS's write operations, which `protectContents` wraps. */
export interface MemFs {
  stream_ops: { write: WriteOp };
  ops_table: { file: { stream: { write: WriteOp } } } | null;
}

/** A node's saved fields. */
interface NodeRecord {
  node: FsNode;
  name: string;
  parent: FsNode;
  mode: number;
  rdev: number;
  atime: number;
  mtime: number;
  ctime: number;
  usedBytes?: number;
  contents?: Uint8Array | Int8Array;
  /** A folder's entries. */
  entries?: Record<string, FsNode>;
  link?: string;
  mounted: { root: FsNode } | null;
}

interface StreamRecord {
  fd: number;
  stream: FsStream;
  position: number;
  flags: number;
}

/** Contents arrays that a saved state holds: a write into one must copy it first. */
const held = new WeakSet<Uint8Array | Int8Array>();

/**
 * Makes MEMFS copy a file's contents before writing into them when a saved state holds them
 * (MEMFS writes in place when the array has room). Call once, before the first state is taken.
 */
export function protectContents(memfs: MemFs): void {
  const write = memfs.stream_ops.write;
  const copyOnWrite: WriteOp = (stream, ...rest) => {
    const contents = stream.node.contents;
    if (isFileContents(contents) && held.has(contents)) {
      stream.node.contents = contents.slice();
    }
    return write(stream, ...rest);
  };
  // msync calls the first; file streams call the second.
  memfs.stream_ops.write = copyOnWrite;
  if (memfs.ops_table) memfs.ops_table.file.stream.write = copyOnWrite;
}

function isFileContents(value: unknown): value is Uint8Array | Int8Array {
  return value instanceof Uint8Array || value instanceof Int8Array;
}

function isFolderContents(value: unknown): value is Record<string, FsNode> {
  return typeof value === "object" && value !== null && !ArrayBuffer.isView(value);
}

function sameEntries(now: Record<string, FsNode>, saved: Record<string, FsNode>): boolean {
  const names = Object.keys(now);
  if (names.length !== Object.keys(saved).length) return false;
  for (const name of names) if (now[name] !== saved[name]) return false;
  return true;
}

export class FsState {
  readonly #nodes: NodeRecord[] = [];
  readonly #streams: StreamRecord[] = [];
  readonly #streamSlots: number;
  readonly #currentPath: string;
  readonly #nextInode: number;
  readonly #root: FsNode;

  private constructor(private readonly fs: EmscriptenFs) {
    const seen = new Set<FsNode>();
    const walk = (node: FsNode) => {
      if (seen.has(node)) return;
      seen.add(node);
      const record: NodeRecord = {
        node,
        name: node.name,
        parent: node.parent,
        mode: node.mode,
        rdev: node.rdev,
        atime: node.atime,
        mtime: node.mtime,
        ctime: node.ctime,
        usedBytes: node.usedBytes,
        link: node.link,
        mounted: node.mounted,
      };
      if (isFileContents(node.contents)) {
        record.contents = node.contents;
        held.add(node.contents);
      } else if (isFolderContents(node.contents)) {
        record.entries = { ...node.contents };
      }
      this.#nodes.push(record);
      if (node.mounted) walk(node.mounted.root);
      if (record.entries) { for (const child of Object.values(record.entries)) walk(child); }
    };
    walk(fs.root);
    this.#root = fs.root;
    this.#streamSlots = fs.streams.length;
    fs.streams.forEach((stream, fd) => {
      if (!stream) return;
      this.#streams.push({
        fd,
        stream,
        position: stream.shared.position,
        flags: stream.shared.flags,
      });
    });
    this.#currentPath = fs.currentPath;
    this.#nextInode = fs.nextInode;
  }

  /** Saves the file system as it is now. */
  static take(fs: EmscriptenFs): FsState {
    return new FsState(fs);
  }

  /**
   * The tree's shape (names, modes, sizes, link targets), for a digest that tells the images of
   * workers booted alike: their times differ, their contents do not.
   */
  digestInput(): string {
    return this.#nodes.map((r) => `${r.name}\0${r.mode}\0${r.usedBytes}\0${r.link}`).join("\n");
  }

  /** Whether the file system is exactly as saved. */
  isCurrent(): boolean {
    const fs = this.fs;
    if (fs.root !== this.#root || fs.currentPath !== this.#currentPath) return false;
    if (fs.nextInode !== this.#nextInode) return false;
    for (const r of this.#nodes) {
      const n = r.node;
      if (
        n.mtime !== r.mtime || n.ctime !== r.ctime || n.atime !== r.atime ||
        n.mode !== r.mode || n.usedBytes !== r.usedBytes || n.name !== r.name ||
        n.parent !== r.parent || n.link !== r.link || n.mounted !== r.mounted ||
        n.rdev !== r.rdev
      ) return false;
      if (r.contents !== undefined && n.contents !== r.contents) return false;
      if (r.entries && !(isFolderContents(n.contents) && sameEntries(n.contents, r.entries))) {
        return false;
      }
    }
    if (fs.streams.length !== this.#streamSlots) return false;
    let open = 0;
    for (const stream of fs.streams) if (stream) open++;
    if (open !== this.#streams.length) return false;
    for (const s of this.#streams) {
      if (
        fs.streams[s.fd] !== s.stream || s.stream.shared.position !== s.position ||
        s.stream.shared.flags !== s.flags
      ) return false;
    }
    return true;
  }

  /**
   * Puts the saved state back: nodes, folder entries, descriptors (those opened since are
   * dropped without their close operations: their nodes are gone too), working directory.
   */
  restore(): void {
    const fs = this.fs;
    for (const r of this.#nodes) {
      const n = r.node;
      n.name = r.name;
      n.parent = r.parent;
      n.mode = r.mode;
      n.rdev = r.rdev;
      n.atime = r.atime;
      n.mtime = r.mtime;
      n.ctime = r.ctime;
      n.link = r.link;
      n.mounted = r.mounted;
      if (r.entries) n.contents = { ...r.entries };
      else if (r.contents !== undefined) {
        n.contents = r.contents;
        n.usedBytes = r.usedBytes;
      }
    }
    // Lookups go through the name table first: it must hold the saved nodes only.
    fs.nameTable.fill(null);
    for (const r of this.#nodes) fs.hashAddNode(r.node);
    fs.streams.length = this.#streamSlots;
    fs.streams.fill(null);
    for (const s of this.#streams) {
      s.stream.shared.position = s.position;
      s.stream.shared.flags = s.flags;
      fs.streams[s.fd] = s.stream;
    }
    fs.currentPath = this.#currentPath;
    fs.nextInode = this.#nextInode;
    fs.root = this.#root;
  }
}
