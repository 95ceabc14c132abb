/**
 * Messages larger than the NATS server's max_payload (1 MB by default): sent in chunks on one
 * subject, each with a `Pyodide-Chunk` header, and put together again by the one subscriber
 * that reads them (a gateway's reply subject, an instance's own subjects). NATS keeps the
 * order of one publisher's messages to one subscriber, so the chunks arrive in order; a
 * message that lost a chunk (NATS went away meanwhile) is dropped whole after a while.
 *
 * A subject served by a queue group cannot take chunks (each could go to another member): a
 * request too large for it is refused before it is sent, naming the limit.
 *
 * @module
 */

import {
  headers,
  type Msg,
  type MsgHdrs,
  type NatsConnection,
  nuid,
} from "@nats-io/transport-node";

/** The header that marks a chunk: `<message id> <index> <count>`. */
export const CHUNK_HEADER = "Pyodide-Chunk";

/** Room left in each message for its headers and the protocol line. */
const HEADROOM = 1024;
/** A message whose chunks stopped coming is dropped after this long. */
const ASSEMBLY_TIMEOUT_MS = 60_000;
/** The most bytes held in messages being put together, per reader. */
const MAX_ASSEMBLING_BYTES = 512 << 20;
/**
 * The most messages being put together at once, per reader: anyone on the account can send a
 * chunk, and each message begun costs a timer and a table whatever its chunks hold.
 */
const MAX_ASSEMBLIES = 1024;
/** What a chunk costs beyond its bytes, counted against MAX_ASSEMBLING_BYTES. */
const CHUNK_OVERHEAD = 64;
/** The smallest chunk a sender makes but the last (messageRoom's floor). */
const MIN_CHUNK = 1024;

/** The server's largest message, as it said when the connection was made. */
export function maxPayload(nc: NatsConnection): number {
  return nc.info?.max_payload ?? 1 << 20;
}

/** The most body bytes one message takes on this connection. */
export function messageRoom(nc: NatsConnection): number {
  return Math.max(1024, maxPayload(nc) - HEADROOM);
}

/**
 * Publishes `body` on `subject`, in chunks if it is too large for one message. Throws what
 * the client throws when the connection is closed.
 */
export function publishBody(
  nc: NatsConnection,
  subject: string,
  body: Uint8Array,
  options: { reply?: string } = {},
): void {
  const room = messageRoom(nc);
  if (body.byteLength <= room) {
    nc.publish(subject, body, options);
    return;
  }
  const id = nuid.next();
  const count = Math.ceil(body.byteLength / room);
  for (let index = 0; index < count; index++) {
    const chunkHeaders = headers();
    chunkHeaders.set(CHUNK_HEADER, `${id} ${index} ${count}`);
    nc.publish(subject, body.subarray(index * room, (index + 1) * room), {
      ...options,
      headers: chunkHeaders,
    });
  }
}

interface Assembly {
  /** The chunks come, by index: a map, so that a count claimed reserves nothing. */
  parts: Map<number, Uint8Array>;
  count: number;
  bytes: number;
  timer: ReturnType<typeof setTimeout>;
}

/**
 * Puts chunked messages together: `take` returns a message's whole body, or undefined while
 * chunks are missing.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { headers } from "@nats-io/transport-node";
 * import { Reassembler } from "./wire.ts";
 * const chunk = (index: number, data: string) => {
 *   const h = headers();
 *   h.set("Pyodide-Chunk", `m1 ${index} 2`);
 *   return { headers: h, data: new TextEncoder().encode(data) };
 * };
 * const reader = new Reassembler();
 * assert.equal(reader.take(chunk(0, "ab")), undefined);
 * assert.equal(new TextDecoder().decode(reader.take(chunk(1, "cd"))), "abcd");
 * reader.close();
 * ```
 */
export class Reassembler {
  #assemblies = new Map<string, Assembly>();
  #bytes = 0;

  constructor(private readonly onDropped: (why: string) => void = () => {}) {}

  take(msg: Pick<Msg, "data" | "headers">): Uint8Array | undefined {
    const chunk = chunkOf(msg.headers);
    if (chunk === undefined) return msg.data;
    const { id, index, count } = chunk;
    let assembly = this.#assemblies.get(id);
    if (assembly === undefined) {
      if (this.#assemblies.size >= MAX_ASSEMBLIES) {
        this.onDropped(`more than ${MAX_ASSEMBLIES} messages were being put together`);
        return undefined;
      }
      assembly = {
        parts: new Map(),
        count,
        bytes: 0,
        timer: setTimeout(() => this.#drop(id, "its chunks stopped coming"), ASSEMBLY_TIMEOUT_MS),
      };
      this.#assemblies.set(id, assembly);
    }
    if (index >= assembly.count || count !== assembly.count || assembly.parts.has(index)) {
      this.#drop(id, "a chunk came twice or out of range");
      return undefined;
    }
    // A copy: the client may reuse the buffer the message's data views.
    assembly.parts.set(index, msg.data.slice());
    const cost = msg.data.byteLength + CHUNK_OVERHEAD;
    assembly.bytes += cost;
    this.#bytes += cost;
    if (this.#bytes > MAX_ASSEMBLING_BYTES) {
      this.#drop(id, `more than ${MAX_ASSEMBLING_BYTES} bytes were being put together`);
      return undefined;
    }
    if (assembly.parts.size < assembly.count) return undefined;
    this.#forget(id);
    let length = 0;
    for (const part of assembly.parts.values()) length += part.byteLength;
    const whole = new Uint8Array(length);
    let offset = 0;
    for (let i = 0; i < assembly.count; i++) {
      const part = assembly.parts.get(i)!;
      whole.set(part, offset);
      offset += part.byteLength;
    }
    return whole;
  }

  /** Drops every message being put together. */
  close(): void {
    for (const id of [...this.#assemblies.keys()]) this.#forget(id);
  }

  #drop(id: string, why: string): void {
    if (this.#forget(id)) this.onDropped(why);
  }

  #forget(id: string): boolean {
    const assembly = this.#assemblies.get(id);
    if (assembly === undefined) return false;
    clearTimeout(assembly.timer);
    this.#bytes -= assembly.bytes;
    this.#assemblies.delete(id);
    return true;
  }
}

function chunkOf(
  msgHeaders: MsgHdrs | undefined,
): { id: string; index: number; count: number } | undefined {
  const value = msgHeaders?.get(CHUNK_HEADER);
  if (!value) return undefined;
  const [id, index, count] = value.split(" ");
  const i = Number(index);
  const n = Number(count);
  if (
    !id || !Number.isInteger(i) || !Number.isInteger(n) || i < 0 || n < 1 ||
    n > MAX_ASSEMBLING_BYTES / MIN_CHUNK
  ) {
    return undefined;
  }
  return { id, index: i, count: n };
}

/** True for the server's "no responders" status: no one subscribes to the subject. */
export function isNoResponders(msg: Pick<Msg, "data" | "headers">): boolean {
  return msg.data.byteLength === 0 && msg.headers?.code === 503;
}
