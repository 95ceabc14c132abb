/**
 * The gateway's view of a service's instances, made of their heartbeats (subjects.ts): which
 * are there, and how many requests each could start now. An instance whose heartbeats stop
 * for three periods, or that says it is leaving, is gone. While the gateway itself is cut off
 * from NATS no instance can be heard, so none expires then.
 *
 * @module
 */

import { type Heartbeat, HEARTBEAT_MS } from "./subjects.ts";

/** An instance gone silent this long is given up. */
export const SILENT_LIMIT_MS = 3 * HEARTBEAT_MS;
/**
 * How often the gateway asks NATS whether a suspect (below) is still subscribed. NATS keeps a
 * stalled client's subscriptions until it drops the client (ping_interval × ping_max, 2 min × 2
 * by default); once it has, "no responders" says so.
 */
export const SUSPECT_CHECK_MS = 5000;

/** What the gateway knows of one instance, as of its last heartbeat. */
export interface KnownInstance {
  readonly id: string;
  freeSlots: number;
  readyWorkers: number;
  queueDepth: number;
  /** When its last heartbeat came (ms, monotonic). */
  lastSeen: number;
}

export interface DirectoryEvents {
  /** Some instance has a free worker: requests waiting for one may try again. */
  room(): void;
  /**
   * An instance left or went silent: its sessions are lost. `silent`: given up for silence, it
   * may be stalled rather than gone (see `suspect`).
   */
  gone(id: string, why: string, silent: boolean): void;
}

/**
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { InstanceDirectory } from "./directory.ts";
 * const gone: string[] = [];
 * const directory = new InstanceDirectory({ room: () => {}, gone: (id) => gone.push(id) });
 * const beat = { instance_id: "i1", protocol: 1, free_slots: 1, ready_workers: 1, queue_depth: 0 };
 * directory.heard({ ...beat, state: "serving" }, 0);
 * assert.equal(directory.freeSlots(), 1);
 * directory.sweep(10_000);
 * assert.deepEqual(gone, ["i1"]);
 * ```
 */
export class InstanceDirectory {
  #instances = new Map<string, KnownInstance>();
  /** Instances that said they leave: a late heartbeat of theirs does not bring them back. */
  #left = new Set<string>();
  /** Instances given up while perhaps still subscribed (stalled, cut off). */
  #suspects = new Set<string>();
  #paused = false;

  constructor(private readonly events: DirectoryEvents) {}

  get size(): number {
    return this.#instances.size;
  }

  has(id: string): boolean {
    return this.#instances.has(id);
  }

  get(id: string): KnownInstance | undefined {
    return this.#instances.get(id);
  }

  values(): IterableIterator<KnownInstance> {
    return this.#instances.values();
  }

  /** Requests the instances said they could start, as of their last heartbeats. */
  freeSlots(): number {
    let free = 0;
    for (const instance of this.#instances.values()) free += instance.freeSlots;
    return free;
  }

  /** Takes a heartbeat in. */
  heard(beat: Heartbeat, now = performance.now()): void {
    const id = beat.instance_id;
    if (beat.state === "leaving") {
      if (this.#left.has(id)) return;
      this.#left.add(id);
      this.forget(id, "left the service");
      return;
    }
    if (this.#left.has(id)) return;
    this.#suspects.delete(id);
    let instance = this.#instances.get(id);
    if (instance === undefined) {
      instance = { id, freeSlots: 0, readyWorkers: 0, queueDepth: 0, lastSeen: now };
      this.#instances.set(id, instance);
    }
    instance.freeSlots = beat.free_slots;
    instance.readyWorkers = beat.ready_workers;
    instance.queueDepth = beat.queue_depth;
    instance.lastSeen = now;
    if (beat.free_slots > 0) this.events.room();
  }

  /** The instance is gone (left, silent, or found dead); says so once. */
  forget(id: string, why: string, { silent = false } = {}): void {
    if (!this.#instances.delete(id)) return;
    this.events.gone(id, why, silent);
  }

  /**
   * The instance stopped answering but may still be subscribed (stalled, cut off), so NATS may
   * still hand it requests: suspected until it is heard again, or NATS says it holds no
   * subscriptions any more (`clear`).
   */
  suspect(id: string): void {
    if (!this.#left.has(id)) this.#suspects.add(id);
  }

  /** The instance holds no subscriptions any more (NATS said "no responders" for it). */
  clear(id: string): void {
    this.#suspects.delete(id);
  }

  /** The instances suspected now. */
  suspects(): string[] {
    return [...this.#suspects];
  }

  /**
   * Whether some instance given up lately may still hold queue-group subscriptions: while one
   * does, NATS may hand it requests it will never see, and the gateway sends each request to an
   * instance it heard from instead.
   */
  hasSuspects(): boolean {
    return this.#suspects.size > 0;
  }

  /** The instance that said it has the most idle workers (at least one), if any. */
  roomiest(): KnownInstance | undefined {
    let best: KnownInstance | undefined;
    for (const instance of this.#instances.values()) {
      if (instance.freeSlots > 0 && (!best || instance.freeSlots > best.freeSlots)) {
        best = instance;
      }
    }
    return best;
  }

  /** Gives up instances silent past the limit. */
  sweep(now = performance.now()): void {
    if (this.#paused) return;
    for (const instance of [...this.#instances.values()]) {
      if (now - instance.lastSeen > SILENT_LIMIT_MS) {
        this.forget(
          instance.id,
          `sent no heartbeat for ${Math.round((now - instance.lastSeen) / 1000)} s`,
          { silent: true },
        );
      }
    }
  }

  /** The gateway lost NATS: silence says nothing about the instances now. */
  pause(): void {
    this.#paused = true;
  }

  /** The gateway is back: every instance gets a full period from now to be heard again. */
  resume(now = performance.now()): void {
    this.#paused = false;
    for (const instance of this.#instances.values()) instance.lastSeen = now;
  }
}
