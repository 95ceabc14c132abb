/**
 * A run's stdout and stderr, as Pyodide's write handlers deliver them: each kept up to a byte
 * cap (past it, Python is asked to stop), and streamed to the main thread as written when the
 * request asked for it. Nothing Python prints reaches the process's stdout.
 *
 * @module
 */

import type { OutputMessage } from "./messages.ts";

/** Collects one stream's output up to a byte cap; past it, asks Python to stop. */
export class OutputCapture {
  #chunks: string[] = [];
  #bytes = 0;
  #decoder = new TextDecoder();
  truncated = false;

  constructor(
    private readonly maxBytes: number,
    private readonly onLimit: () => void,
    private readonly onText: (text: string) => void,
  ) {}

  write = (buffer: Uint8Array): number => {
    if (this.truncated) return buffer.length;
    const room = this.maxBytes - this.#bytes;
    const kept = buffer.length > room ? buffer.subarray(0, room) : buffer;
    const text = this.#decoder.decode(kept, { stream: true });
    this.#chunks.push(text);
    this.#bytes += kept.length;
    if (text) this.onText(text);
    if (kept !== buffer) {
      this.truncated = true;
      this.onLimit();
    }
    return buffer.length;
  };

  take(): string {
    const text = this.#chunks.join("") + this.#decoder.decode();
    this.#chunks = [];
    this.#bytes = 0;
    this.truncated = false;
    return text;
  }
}

/** What a run wrote, as its answer carries it. */
export interface RunOutput {
  /** True when stdout or stderr was cut at the cap. */
  truncated: boolean;
  stdout: string;
  stderr: string;
}

/** Both streams of the interpreter, and the run they stream to, if any. */
export class OutputStreams {
  readonly stdout: OutputCapture;
  readonly stderr: OutputCapture;
  /** The run whose output is posted as it is written. */
  #streaming: { seq: number } | undefined;

  constructor(maxBytes: number, onLimit: () => void, send: (message: OutputMessage) => void) {
    const capture = (stream: "stdout" | "stderr") =>
      new OutputCapture(
        maxBytes,
        onLimit,
        (text) =>
          this.#streaming && send({ type: "output", seq: this.#streaming.seq, stream, text }),
      );
    this.stdout = capture("stdout");
    this.stderr = capture("stderr");
  }

  /** Starts a run's output, posted as written if `stream`. */
  begin(seq: number, stream: boolean): void {
    // Output written between runs (by a destructor the reset set off, say) is no request's.
    this.stdout.take();
    this.stderr.take();
    this.#streaming = stream ? { seq } : undefined;
  }

  /** Stops posting: what is written from here on is no request's. */
  end(): void {
    this.#streaming = undefined;
  }

  /** The run's output, which is then cleared. */
  take(): RunOutput {
    // Before `take`, which clears the marks.
    const truncated = this.stdout.truncated || this.stderr.truncated;
    return { truncated, stdout: this.stdout.take(), stderr: this.stderr.take() };
  }
}
