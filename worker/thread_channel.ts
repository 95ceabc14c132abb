/**
 * An ordered message channel between a worker process's main thread and its Python thread,
 * through shared memory. Each direction has a one-slot mailbox in a `SharedArrayBuffer`: the
 * sender writes a message into the slot as JSON when the slot is free, and the receiver, waiting
 * on it with `Atomics.waitAsync`, reads it and frees the slot. A message that finds the slot
 * still full, does not fit, or holds what JSON cannot carry (the control buffer) goes by
 * `postMessage` instead. Every message carries a sequence number, and the receiver delivers
 * them in that order, whichever way they came.
 *
 * The sender never waits: the Python thread's event loop does not run while Python does (nor
 * during the reset after a run), and streamed output and a run's `done` must leave at once.
 *
 * Why by hand: a `postMessage` round trip between two Deno threads costs 106-123 us here, the
 * mailbox 70-86 us (docs/performance.md), and every request crosses it twice. Both threads
 * keep their event loops, so nothing else changes for them.
 *
 * @module
 */

/** Int32 slots at the head of each mailbox. */
const Slot = {
  /** The sequence number of the message in the slot, set by the sender once it is written. */
  Sent: 0,
  /** Set by the receiver to the `Sent` it has read: the slot is free again. */
  Taken: 1,
  /** Bytes of the message's JSON. */
  Length: 2,
  /** Set when the receiving end is closed: its loop ends. */
  Closed: 3,
} as const;
const HEADER_BYTES = 16;

/** Mailbox size per direction; larger messages (files, big outputs) are posted. */
export const MAILBOX_BYTES = 256 * 1024;

/** What the sending side of a thread boundary offers: a `Worker`, or a worker's `self`. */
interface Port {
  postMessage(message: unknown): void;
  onmessage: ((event: MessageEvent) => void) | null;
}

interface Connect {
  channel: { toThread: SharedArrayBuffer; fromThread: SharedArrayBuffer };
}

/** A message sent by `postMessage`, with its place in the order. */
interface Posted<T> {
  seq: number;
  message: T;
}

/** The buffers of a channel, as seen from one end. */
interface Mailboxes {
  outbox: SharedArrayBuffer;
  inbox: SharedArrayBuffer;
}

/** One end of the channel: sends into one mailbox, receives from the other. */
export class ChannelEnd<Send, Receive> {
  #out!: Int32Array;
  #outBytes!: Uint8Array;
  #in!: Int32Array;
  #inBytes!: Uint8Array;
  #connected = false;
  /** Messages sent before the other end connected this one. */
  #early: Send[] = [];
  #closed = false;
  #lastSent = 0;
  #nextDelivered = 1;
  /** Received messages waiting for those before them. */
  #arrived = new Map<number, Receive>();
  #encoder = new TextEncoder();
  #decoder = new TextDecoder();

  /** Without `mailboxes`, the end waits for the other end's `openChannel` to send them. */
  constructor(
    private readonly port: Port,
    private readonly onMessage: (message: Receive) => void,
    mailboxes?: Mailboxes,
  ) {
    port.onmessage = (event: MessageEvent) => {
      if (!this.#connected) {
        const { toThread, fromThread } = (event.data as Connect).channel;
        this.#connect({ outbox: fromThread, inbox: toThread });
        return;
      }
      const { seq, message } = event.data as Posted<Receive>;
      this.#arrive(seq, message);
    };
    if (mailboxes) this.#connect(mailboxes);
  }

  #connect({ outbox, inbox }: Mailboxes): void {
    this.#out = new Int32Array(outbox, 0, HEADER_BYTES / 4);
    this.#outBytes = new Uint8Array(outbox, HEADER_BYTES);
    this.#in = new Int32Array(inbox, 0, HEADER_BYTES / 4);
    this.#inBytes = new Uint8Array(inbox, HEADER_BYTES);
    this.#connected = true;
    this.#watchMailbox();
    for (const message of this.#early.splice(0)) this.send(message);
  }

  /** Sends `message` after those sent before it. */
  send(message: Send): void {
    if (this.#closed) return;
    if (!this.#connected) {
      this.#early.push(message);
      return;
    }
    const seq = this.#lastSent + 1 | 0;
    const slotFree = Atomics.load(this.#out, Slot.Taken) === Atomics.load(this.#out, Slot.Sent);
    const length = slotFree ? this.#writeJson(message) : -1;
    if (length < 0) {
      // Throws, as `postMessage` does, for a message that cannot be cloned; nothing is lost.
      this.port.postMessage({ seq, message } satisfies Posted<Send>);
    } else {
      Atomics.store(this.#out, Slot.Length, length);
      Atomics.store(this.#out, Slot.Sent, seq);
      Atomics.notify(this.#out, Slot.Sent);
    }
    this.#lastSent = seq;
  }

  /** Stops receiving and sending: the thread on the other side is going away. */
  close(): void {
    this.#closed = true;
    this.#early = [];
    this.#arrived.clear();
    if (!this.#connected) return;
    Atomics.store(this.#in, Slot.Closed, 1);
    Atomics.notify(this.#in, Slot.Sent);
  }

  /** Writes `message` into the free slot as JSON; its length, or -1 if it must be posted. */
  #writeJson(message: Send): number {
    if (!fitsAsJson(message, this.#outBytes.length)) return -1;
    const json = JSON.stringify(message);
    const { read, written } = this.#encoder.encodeInto(json, this.#outBytes);
    return read === json.length ? written : -1;
  }

  async #watchMailbox(): Promise<void> {
    let seen = 0;
    for (;;) {
      const wait = Atomics.waitAsync(this.#in, Slot.Sent, seen);
      if (wait.async) await wait.value;
      if (Atomics.load(this.#in, Slot.Closed) === 1) return;
      const seq = Atomics.load(this.#in, Slot.Sent);
      if (seq === seen) continue;
      seen = seq;
      const length = Atomics.load(this.#in, Slot.Length);
      // A copy: TextDecoder does not read shared memory, and the slot is reused once taken.
      const message = JSON.parse(this.#decoder.decode(this.#inBytes.slice(0, length)));
      Atomics.store(this.#in, Slot.Taken, seq);
      this.#arrive(seq, message);
    }
  }

  /** Delivers `message` and those it was holding back, in order. */
  #arrive(seq: number, message: Receive): void {
    if (this.#closed) return;
    this.#arrived.set(seq, message);
    while (!this.#closed && this.#arrived.has(this.#nextDelivered)) {
      const next = this.#arrived.get(this.#nextDelivered)!;
      this.#arrived.delete(this.#nextDelivered);
      this.#nextDelivered = this.#nextDelivered + 1 | 0;
      try {
        this.onMessage(next);
      } catch (error) {
        // As an exception in an `onmessage` handler would: the thread's or process's own.
        reportError(error);
      }
    }
  }
}

/**
 * Whether `value` may go as JSON into `capacity` bytes and come back the same: plain data with
 * no `undefined`, `-0` or non-finite numbers (JSON changes those), and a size estimate (3 UTF-8
 * bytes per UTF-16 unit) within the capacity. The estimate walks fields, never characters, so
 * a 10 MiB file is refused at once rather than serialized first.
 */
function fitsAsJson(value: unknown, capacity: number): boolean {
  let budget = capacity;
  const visit = (item: unknown): boolean => {
    switch (typeof item) {
      case "string":
        budget -= item.length * 3 + 2;
        return budget >= 0;
      case "number":
        budget -= 24;
        return Number.isFinite(item) && !Object.is(item, -0) && budget >= 0;
      case "boolean":
        budget -= 5;
        return budget >= 0;
      case "object": {
        if (item === null) return (budget -= 4) >= 0;
        if (Array.isArray(item)) {
          // Holes would come back as null.
          return Object.keys(item).length === item.length && item.every(visit);
        }
        if (Object.getPrototypeOf(item) !== Object.prototype) return false;
        for (const [key, field] of Object.entries(item)) {
          budget -= key.length * 3 + 4;
          if (!visit(field)) return false;
        }
        return budget >= 0;
      }
      default:
        return false;
    }
  };
  return visit(value);
}

/** The main thread's end, for a Web Worker that calls `acceptChannel`. */
export function openChannel<Send, Receive>(
  worker: Worker,
  onMessage: (message: Receive) => void,
): ChannelEnd<Send, Receive> {
  const toThread = new SharedArrayBuffer(HEADER_BYTES + MAILBOX_BYTES);
  const fromThread = new SharedArrayBuffer(HEADER_BYTES + MAILBOX_BYTES);
  worker.postMessage({ channel: { toThread, fromThread } } satisfies Connect);
  return new ChannelEnd(worker, onMessage, { outbox: toThread, inbox: fromThread });
}

/**
 * The Python thread's end. It is connected by the main thread's first message; what is sent
 * before that waits.
 */
export function acceptChannel<Send, Receive>(
  self: Port,
  onMessage: (message: Receive) => void,
): ChannelEnd<Send, Receive> {
  return new ChannelEnd(self, onMessage);
}
