/**
 * An ordered message channel between a worker process's main thread and its Python thread,
 * through shared memory. Each direction is a one-slot mailbox in a `SharedArrayBuffer`: the
 * sender writes a batch of messages as JSON and bumps a sequence number, and the receiver,
 * waiting on that number with `Atomics.waitAsync`, reads the batch and acknowledges it. A
 * batch that does not fit, or holds what JSON cannot carry (the control buffer), goes by
 * `postMessage`, and the slot only says that it did, so that order is kept either way.
 *
 * Why by hand: a `postMessage` round trip between two Deno threads costs 106-123 us here, the
 * mailbox 70-86 us (docs/performance.md), and every request crosses it twice. Both threads
 * keep their event loops, so nothing else changes for them.
 *
 * @module
 */

/** Int32 slots at the head of each mailbox. */
const Slot = {
  /** Bumped by the sender when a batch is in the slot. */
  Sent: 0,
  /** Set by the receiver to the `Sent` it has read: the slot is free again. */
  Taken: 1,
  /** Bytes of the JSON batch, or `POSTED`. */
  Length: 2,
  /** Set when the receiving end is closed: its loop ends. */
  Closed: 3,
} as const;
const HEADER_BYTES = 16;
const POSTED = -1;

/** Mailbox size per direction; larger batches (files, big outputs) are posted. */
export const MAILBOX_BYTES = 256 * 1024;

/** What the sending side of a thread boundary offers: a `Worker`, or a worker's `self`. */
interface Port {
  postMessage(message: unknown): void;
  onmessage: ((event: MessageEvent) => void) | null;
}

interface Connect {
  channel: { toThread: SharedArrayBuffer; fromThread: SharedArrayBuffer };
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
  #queued: Send[] = [];
  #sending = false;
  #closed = false;
  #posted: Receive[][] = [];
  #postedArrived: (() => void) | undefined;
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
      this.#posted.push(event.data);
      this.#postedArrived?.();
    };
    if (mailboxes) this.#connect(mailboxes);
  }

  #connect({ outbox, inbox }: Mailboxes): void {
    this.#out = new Int32Array(outbox, 0, HEADER_BYTES / 4);
    this.#outBytes = new Uint8Array(outbox, HEADER_BYTES);
    this.#in = new Int32Array(inbox, 0, HEADER_BYTES / 4);
    this.#inBytes = new Uint8Array(inbox, HEADER_BYTES);
    this.#connected = true;
    this.#receive();
    if (this.#queued.length > 0) this.#flush();
  }

  /** Sends `message` after those sent before it. */
  send(message: Send): void {
    if (this.#closed) return;
    this.#queued.push(message);
    if (this.#connected && !this.#sending) this.#flush();
  }

  /** Stops receiving and sending: the thread on the other side is going away. */
  close(): void {
    this.#closed = true;
    this.#queued = [];
    if (!this.#connected) return;
    Atomics.store(this.#in, Slot.Closed, 1);
    Atomics.notify(this.#in, Slot.Sent);
  }

  /** Puts the queued messages in the mailbox once the receiver has taken the last batch. */
  #flush(): void {
    const sent = Atomics.load(this.#out, Slot.Sent);
    if (Atomics.load(this.#out, Slot.Taken) !== sent) {
      this.#sending = true;
      const wait = Atomics.waitAsync(this.#out, Slot.Taken, Atomics.load(this.#out, Slot.Taken));
      const retry = () => {
        this.#sending = false;
        if (!this.#closed && this.#queued.length > 0) this.#flush();
      };
      if (wait.async) wait.value.then(retry);
      else retry();
      return;
    }
    const batch = this.#queued;
    this.#queued = [];
    Atomics.store(this.#out, Slot.Length, this.#write(batch));
    Atomics.store(this.#out, Slot.Sent, sent + 1 | 0);
    Atomics.notify(this.#out, Slot.Sent);
  }

  /** Writes `batch` into the mailbox as JSON and returns its length, or posts it. */
  #write(batch: Send[]): number {
    if (fitsAsJson(batch, this.#outBytes.length)) {
      const json = JSON.stringify(batch);
      const { read, written } = this.#encoder.encodeInto(json, this.#outBytes);
      if (read === json.length) return written;
    }
    this.port.postMessage(batch);
    return POSTED;
  }

  async #receive(): Promise<void> {
    let seen = 0;
    for (;;) {
      const wait = Atomics.waitAsync(this.#in, Slot.Sent, seen);
      if (wait.async) await wait.value;
      if (Atomics.load(this.#in, Slot.Closed) === 1) return;
      const sent = Atomics.load(this.#in, Slot.Sent);
      if (sent === seen) continue;
      seen = sent;
      const length = Atomics.load(this.#in, Slot.Length);
      let batch: Receive[];
      if (length === POSTED) {
        batch = await this.#nextPosted();
      } else {
        // A copy: TextDecoder does not read shared memory, and the slot is reused once taken.
        batch = JSON.parse(this.#decoder.decode(this.#inBytes.slice(0, length)));
      }
      Atomics.store(this.#in, Slot.Taken, sent);
      Atomics.notify(this.#in, Slot.Taken);
      if (this.#closed) return;
      for (const message of batch) {
        try {
          this.onMessage(message);
        } catch (error) {
          // As an exception in an `onmessage` handler would: the thread's or process's own.
          reportError(error);
        }
      }
    }
  }

  /** The next posted batch; a posted batch may arrive after the slot that announces it. */
  async #nextPosted(): Promise<Receive[]> {
    while (this.#posted.length === 0) {
      await new Promise<void>((resolve) => this.#postedArrived = resolve);
    }
    this.#postedArrived = undefined;
    return this.#posted.shift()!;
  }
}

/**
 * Whether `value` may go as JSON into `capacity` bytes: plain data only, and a size estimate
 * (3 UTF-8 bytes per UTF-16 unit) within the capacity. The estimate walks fields, never
 * characters, so a 10 MiB file is refused at once rather than serialized first.
 */
function fitsAsJson(value: unknown, capacity: number): boolean {
  let budget = capacity;
  const visit = (item: unknown): boolean => {
    switch (typeof item) {
      case "string":
        budget -= item.length * 3 + 2;
        return budget >= 0;
      case "number":
      case "boolean":
      case "undefined":
        budget -= 24;
        return budget >= 0;
      case "object": {
        if (item === null) return (budget -= 4) >= 0;
        if (Array.isArray(item)) return item.every(visit);
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
 * The Web Worker's end. It is connected by the main thread's first message; what is sent
 * before that waits.
 */
export function acceptChannel<Send, Receive>(
  self: Port,
  onMessage: (message: Receive) => void,
): ChannelEnd<Send, Receive> {
  return new ChannelEnd(self, onMessage);
}
