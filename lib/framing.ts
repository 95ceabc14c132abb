/**
 * Newline-delimited framing over byte streams: one message per `\n`-terminated line.
 *
 * Framing knows nothing about JSON-RPC; it only cuts lines and writes them, and looks for the
 * `id` of a line too long to keep (id_scanner.ts), so that its answer can name it. Hand-written
 * because no maintained package enforces a maximum line length while it splits (a
 * TextLineStream buffers an unbounded line before a limit could be checked).
 *
 * @module
 */

import { IdScanner } from "./id_scanner.ts";
import type { JsonRpcId } from "./protocol.ts";

const NEWLINE = 0x0a;
const CARRIAGE_RETURN = 0x0d;

/**
 * One framed line, or the report that a line was longer than allowed and was skipped, with
 * its top-level `id` when one was found in it (see id_scanner.ts).
 */
export type Frame =
  | { kind: "line"; text: string }
  | { kind: "oversized"; bytes: number; id?: JsonRpcId };

/**
 * Splits a byte stream into lines of at most `maxLineBytes` bytes (without the terminator).
 *
 * A longer line is discarded as it arrives, never buffered whole, and reported as an
 * `oversized` frame once its end is seen; the lines after it are read as usual. Only such a
 * line's bytes pass through an IdScanner, on their way out: an ordinary line costs nothing
 * more. `\r\n` is accepted, UTF-8 is decoded per whole line (so a character split across
 * reads is intact), and blank lines are skipped. A final line without `\n` is returned at end
 * of stream.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { readFrames } from "./framing.ts";
 * const bytes = new TextEncoder().encode('{"a":1}\r\n{"b":2}\n');
 * const frames = [];
 * for await (const f of readFrames(ReadableStream.from([bytes]), 1024)) frames.push(f);
 * assert.deepEqual(frames, [{ kind: "line", text: '{"a":1}' }, { kind: "line", text: '{"b":2}' }]);
 * ```
 */
export async function* readFrames(
  // Any async iterable: a web ReadableStream, or a Node Readable in clients/typescript/client.ts.
  stream: AsyncIterable<Uint8Array>,
  maxLineBytes: number,
): AsyncGenerator<Frame> {
  const decoder = new TextDecoder();
  let pending: Uint8Array[] = [];
  let pendingBytes = 0;
  /** Set while the rest of a line too long is discarded: it reads what goes by. */
  let discarding: IdScanner | undefined;

  const oversized = (bytes: number, scanner: IdScanner): Frame => {
    const id = scanner.id;
    return id === undefined ? { kind: "oversized", bytes } : { kind: "oversized", bytes, id };
  };

  const takeLine = (tail: Uint8Array): Frame | undefined => {
    const total = pendingBytes + tail.length;
    if (discarding) {
      discarding.feed(tail);
      const frame = oversized(total, discarding);
      discarding = undefined;
      pending = [];
      pendingBytes = 0;
      return frame;
    }
    let bytes = tail;
    if (pending.length > 0) {
      bytes = new Uint8Array(total);
      let offset = 0;
      for (const chunk of pending) {
        bytes.set(chunk, offset);
        offset += chunk.length;
      }
      bytes.set(tail, offset);
      pending = [];
      pendingBytes = 0;
    }
    let end = bytes.length;
    if (end > 0 && bytes[end - 1] === CARRIAGE_RETURN) end--;
    if (end > maxLineBytes) {
      // Within the slack of the check below: kept whole, and scanned at once.
      const scanner = new IdScanner();
      scanner.feed(bytes);
      return oversized(end, scanner);
    }
    const text = decoder.decode(bytes.subarray(0, end));
    return text.trim() === "" ? undefined : { kind: "line", text };
  };

  for await (const chunk of stream) {
    let start = 0;
    while (start < chunk.length) {
      const newline = chunk.indexOf(NEWLINE, start);
      if (newline === -1) {
        const rest = chunk.subarray(start);
        pendingBytes += rest.length;
        if (discarding) discarding.feed(rest);
        else if (pendingBytes > maxLineBytes + 1) {
          // One byte of slack for a `\r` that may precede the coming `\n`. Past it, what was
          // kept of the line is scanned and dropped, and so will be the rest of it.
          discarding = new IdScanner();
          for (const kept of pending) discarding.feed(kept);
          discarding.feed(rest);
          pending = [];
        } else {
          // Copy: the stream may reuse its buffer for the next read.
          pending.push(rest.slice());
        }
        break;
      }
      const frame = takeLine(chunk.subarray(start, newline));
      if (frame) yield frame;
      start = newline + 1;
    }
  }
  if (pendingBytes > 0) {
    const frame = takeLine(new Uint8Array(0));
    if (frame) yield frame;
  }
}

/**
 * A byte source read straight through its `read` op, such as `Deno.stdin`.
 *
 * A process's own stdin and stdout are read and written this way rather than through
 * `Deno.stdin.readable` and `Deno.stdout.writable`: the web stream around the same op costs
 * 30-50 us more per round trip (measured in docs/performance.md), on every request.
 */
export interface ByteReader {
  read(buffer: Uint8Array): Promise<number | null>;
}

/** A byte sink written straight through its `write` op, such as `Deno.stdout`. */
export interface ByteWriter {
  write(bytes: Uint8Array): Promise<number>;
}

/** A byte sink with a blocking `writeSync`, such as `Deno.stdout`. */
export interface SyncByteWriter {
  writeSync(bytes: Uint8Array): number;
}

/**
 * Writes to `sink` with blocking writes, for a `LineWriter`. Deno runs an async write to its
 * own stdout on a thread of its blocking pool (a hand-off to that thread and back, and a dup
 * and a close of the descriptor, per write); a blocking write is one system call. Only for a
 * reader that is always reading: while the pipe is full, the whole event loop waits.
 */
export function blockingWriter(sink: SyncByteWriter): ByteWriter {
  return { write: (bytes) => Promise.resolve(sink.writeSync(bytes)) };
}

/**
 * The chunks that `source` reads, as an async iterable for `readFrames`. Each chunk is a view
 * of one reused buffer, valid until the next chunk is asked for (`readFrames` copies what it
 * keeps).
 */
export async function* chunksOf(
  source: ByteReader,
  bufferBytes = 64 * 1024,
): AsyncGenerator<Uint8Array> {
  const buffer = new Uint8Array(bufferBytes);
  for (;;) {
    const read = await source.read(buffer);
    if (read === null) return;
    yield buffer.subarray(0, read);
  }
}

/**
 * Writes lines to a byte stream, coalescing the lines queued in one turn of the event loop
 * into one write, in order. A write failure (the reader went away) is reported once through
 * `onError` and later lines are dropped.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { LineWriter } from "./framing.ts";
 * const chunks: Uint8Array[] = [];
 * const writer = new LineWriter(new WritableStream({ write: (c) => void chunks.push(c) }));
 * writer.write('{"a":1}');
 * await writer.flushed();
 * assert.equal(new TextDecoder().decode(chunks[0]), '{"a":1}\n');
 * ```
 */
export class LineWriter {
  #writeAll: (bytes: Uint8Array) => Promise<void>;
  #close: () => Promise<void>;
  #encoder = new TextEncoder();
  #queued: string[] = [];
  #unwritten = 0;
  #draining: Promise<void> | undefined;
  #failed = false;

  constructor(
    sink: WritableStream<Uint8Array> | ByteWriter,
    private readonly onError: (error: unknown) => void = () => {},
  ) {
    if (sink instanceof WritableStream) {
      const writer = sink.getWriter();
      this.#writeAll = (bytes) => writer.write(bytes);
      this.#close = () => writer.close();
    } else {
      this.#writeAll = async (bytes) => {
        for (let offset = 0; offset < bytes.length;) {
          offset += await sink.write(bytes.subarray(offset));
        }
      };
      this.#close = () => Promise.resolve();
    }
  }

  /** Queues one line; `line` must not contain `\n` (JSON.stringify output never does). */
  write(line: string): void {
    if (this.#failed) return;
    this.#queued.push(line);
    this.#unwritten += line.length + 1;
    this.#draining ??= this.#drain();
  }

  /** Characters queued or being written, not yet taken by the stream: what a slow reader costs. */
  get unwritten(): number {
    return this.#unwritten;
  }

  /** Resolves when every line queued so far has been handed to the stream. */
  async flushed(): Promise<void> {
    while (this.#draining) await this.#draining;
  }

  /** Flushes, then closes the stream. */
  async close(): Promise<void> {
    await this.flushed();
    await this.#close().catch(() => {});
  }

  async #drain(): Promise<void> {
    // Let the current task queue more lines so they share one write.
    await Promise.resolve();
    try {
      while (this.#queued.length > 0) {
        const batch = this.#queued.join("\n") + "\n";
        this.#queued = [];
        await this.#writeAll(this.#encoder.encode(batch));
        this.#unwritten -= batch.length;
      }
    } catch (error) {
      this.#failed = true;
      this.#queued = [];
      this.#unwritten = 0;
      this.onError(error);
    } finally {
      this.#draining = undefined;
    }
  }
}
