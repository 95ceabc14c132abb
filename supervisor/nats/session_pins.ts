/**
 * Where a gateway (gateway.ts) sends a session's requests: to the instance that holds the
 * session, once known. A session's first request goes to the queue group, and its others wait
 * until an instance accepted it; a session the gateway does not know may be held all the same
 * (another gateway created it, or this one restarted), and is looked for on the instances
 * first.
 *
 * @module
 */

import type { RpcError } from "../../lib/errors.ts";
import type { SessionRegistry } from "../sessions.ts";
import type { RemoteCall } from "./remote_call.ts";

export class SessionPins {
  /** Sessions whose first request is offered: the others wait for its instance. */
  #offering = new Set<string>();
  /** Sessions being looked for on the instances. */
  #locating = new Map<string, Promise<void>>();

  /** @param sessions Which instance holds each session, as far as this gateway knows. */
  constructor(private readonly sessions: SessionRegistry) {}

  /** The session's first request is offered on the queue group. */
  offered(sessionId: string): void {
    this.#offering.add(sessionId);
  }

  /** That offer is over (accepted, refused, or unanswered). */
  settled(sessionId: string): void {
    this.#offering.delete(sessionId);
  }

  /** A session's request that must wait until its first request's instance is known. */
  blocked(call: RemoteCall): boolean {
    const sessionId = call.task.params.session_id;
    return sessionId !== undefined && call.pinnedTo === undefined &&
      this.#offering.has(sessionId);
  }

  /**
   * Pins a waiting request to its session's instance, if known: false while it must wait
   * (`blocked`); throws the RpcError of a session that was lost, or is another tenant's.
   */
  pin(call: RemoteCall): boolean {
    const sessionId = call.task.params.session_id;
    if (sessionId === undefined || call.pinnedTo !== undefined) return true;
    if (this.#offering.has(sessionId)) return false;
    call.pinnedTo = this.sessions.workerOf(sessionId, call.task.params.tenant);
    return true;
  }

  /**
   * A session this gateway does not know is looked for with `find` (which asks the instances),
   * once for all of its requests that come meanwhile; they go to the instance that holds it
   * rather than to whichever the queue group picks, in the order they came (a promise's
   * waiters resume in order). Returns the error to answer a request with, if any.
   */
  async locate(
    call: RemoteCall,
    find: (sessionId: string) => Promise<string | undefined>,
  ): Promise<RpcError | undefined> {
    const sessionId = call.task.params.session_id;
    if (sessionId === undefined || call.pinnedTo !== undefined) return undefined;
    let locating = this.#locating.get(sessionId);
    if (locating === undefined) {
      // Its first request is being offered: the others wait for its instance (`blocked`).
      if (this.#offering.has(sessionId)) return undefined;
      const { tenant } = call.task.params;
      locating = find(sessionId).then((holder) => {
        if (holder !== undefined) this.sessions.touch(sessionId, holder, tenant);
      }).finally(() => this.#locating.delete(sessionId));
      this.#locating.set(sessionId, locating);
    }
    await locating;
    if (call.phase !== "waiting" || call.pinnedTo !== undefined) return undefined;
    try {
      call.pinnedTo = this.sessions.workerOf(sessionId, call.task.params.tenant);
    } catch (error) {
      return error as RpcError;
    }
    return undefined;
  }
}
