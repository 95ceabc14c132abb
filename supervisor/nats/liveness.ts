/**
 * Whether the instances running a gateway's requests are alive: each one that runs some is
 * pinged on its own subject every PING_INTERVAL_MS. An instance whose process ended has no
 * subscriptions left, and NATS answers "no responders" at once: it is dead at the first such
 * answer. One that is there but silent (stopped, cut off) is dead after MAX_MISSES pings
 * unanswered within PING_TIMEOUT_MS each. So a request running on an instance that is
 * SIGKILLed is answered -32001 within PING_INTERVAL_MS and a round trip, and on one that
 * hangs within PING_INTERVAL_MS + MAX_MISSES × (PING_TIMEOUT_MS + PING_INTERVAL_MS).
 *
 * While the gateway itself is cut off from NATS, pings say nothing, and do not count. For a
 * while after it reconnects, "no responders" may only mean that the instance has not
 * reconnected yet: it counts as a miss then.
 *
 * @module
 */

import type { NatsConnection } from "@nats-io/transport-node";
import { ask } from "./ask.ts";
import { parsePong, type ServiceSubjects } from "./subjects.ts";

export const PING_INTERVAL_MS = 250;
export const PING_TIMEOUT_MS = 1000;
export const MAX_MISSES = 2;
/** After the gateway reconnects, "no responders" is a miss rather than a death this long. */
export const RECONNECT_GRACE_MS = 3000;

export interface LivenessContext {
  nc: NatsConnection;
  subjects: ServiceSubjects;
  /** False while the gateway is cut off from NATS. */
  connected(): boolean;
  /** When the gateway last reconnected (ms, monotonic; -Infinity if it never did). */
  reconnectedAt(): number;
  /**
   * The instance is dead, and why: its running requests get -32001. `stalled`: it stopped
   * answering, but may still be subscribed.
   */
  dead(id: string, why: string, stalled: boolean): void;
}

export class Liveness {
  /** Instances watched, with how many of the gateway's requests each runs. */
  #watched = new Map<string, number>();
  #stopped = false;

  constructor(private readonly context: LivenessContext) {}

  /** Starts watching `id` (once per request running there). */
  watch(id: string): void {
    const count = this.#watched.get(id) ?? 0;
    this.#watched.set(id, count + 1);
    if (count === 0) this.#loop(id);
  }

  /** A request on `id` ended; the last one stops the pings. */
  unwatch(id: string): void {
    const count = this.#watched.get(id) ?? 0;
    if (count <= 1) this.#watched.delete(id);
    else this.#watched.set(id, count - 1);
  }

  /** Stops every watch (the instance is given up, or the gateway stops). */
  forget(id: string): void {
    this.#watched.delete(id);
  }

  stop(): void {
    this.#stopped = true;
    this.#watched.clear();
  }

  async #loop(id: string): Promise<void> {
    const { nc, subjects } = this.context;
    const subject = subjects.instance(id).ping;
    let misses = 0;
    while (!this.#stopped && this.#watched.has(id)) {
      const outcome = await ask(nc, subject, new Uint8Array(), PING_TIMEOUT_MS);
      if (this.#stopped || !this.#watched.has(id)) return;
      let miss: string | undefined;
      if (!this.context.connected()) {
        miss = undefined;
      } else if (outcome.kind === "answer") {
        try {
          parsePong(outcome.msg.data);
          misses = 0;
        } catch (error) {
          miss = `its ping answer broke the contract: ${(error as Error).message}`;
        }
      } else if (outcome.kind === "no_responders") {
        if (performance.now() - this.context.reconnectedAt() >= RECONNECT_GRACE_MS) {
          this.#watched.delete(id);
          this.context.dead(
            id,
            "left NATS: nothing subscribes to its subjects any more (it exited, or lost its connection)",
            false,
          );
          return;
        }
        miss = "not subscribed (yet) after the gateway reconnected";
      } else if (outcome.kind === "timeout") {
        miss = `no answer to a ping within ${PING_TIMEOUT_MS} ms`;
      }
      if (miss !== undefined && ++misses >= MAX_MISSES) {
        this.#watched.delete(id);
        this.context.dead(id, `stopped answering: ${miss}, ${misses} times in a row`, true);
        return;
      }
      await new Promise((resolve) => setTimeout(resolve, PING_INTERVAL_MS));
    }
  }
}
