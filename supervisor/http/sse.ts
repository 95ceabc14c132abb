/**
 * Server-sent events for `POST /rpc` with `Accept: text/event-stream`: each JSON-RPC message
 * (the `output` notifications, then the answer) is one `message` event, and a comment every
 * 15 s keeps proxies from closing a stream that waits for a long run.
 *
 * @module
 */

const KEEP_ALIVE_MS = 15_000;

/** One event's text: the message's JSON (one line: JSON.stringify writes no newline). */
export function sseEvent(json: string): string {
  return `event: message\ndata: ${json}\n\n`;
}

/**
 * A stream of events to answer with. `send` queues an event, `end` closes the stream, and
 * `onCancel` runs once if the client goes away first.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { EventStream } from "./sse.ts";
 * const events = new EventStream(() => {});
 * events.send('{"a":1}');
 * events.end();
 * assert.equal(await new Response(events.body).text(), 'event: message\ndata: {"a":1}\n\n');
 * ```
 */
export class EventStream {
  readonly body: ReadableStream<Uint8Array>;
  #controller!: ReadableStreamDefaultController<Uint8Array>;
  #encoder = new TextEncoder();
  #timer: ReturnType<typeof setInterval>;
  #ended = false;

  constructor(onCancel: () => void) {
    this.body = new ReadableStream<Uint8Array>({
      start: (controller) => this.#controller = controller,
      cancel: () => {
        if (this.#ended) return;
        this.#stop();
        onCancel();
      },
    });
    this.#timer = setInterval(() => this.#write(": keep-alive\n\n"), KEEP_ALIVE_MS);
  }

  send(json: string): void {
    this.#write(sseEvent(json));
  }

  end(): void {
    if (this.#ended) return;
    this.#stop();
    this.#controller.close();
  }

  #write(text: string): void {
    if (!this.#ended) this.#controller.enqueue(this.#encoder.encode(text));
  }

  #stop(): void {
    this.#ended = true;
    clearInterval(this.#timer);
  }
}
