/**
 * A gateway's requests (gateway.ts) until they are answered: what it knows of each one, and
 * the table that finds one by its offer's reply-subject token or by its client's key.
 *
 * @module
 */

import type { JsonRpcId } from "../../lib/protocol.ts";
import type { Task } from "../task.ts";

export type Phase = "waiting" | "offered" | "running" | "done";

/** One request from the gateway's client to an instance, until it is answered. */
export interface RemoteCall {
  readonly task: Task;
  /** Its number in this gateway. */
  readonly number: number;
  /**
   * How many times it was offered. Each offer has its own reply subject and request id, so
   * that what comes for an earlier one (a late refusal) cannot pass for the current one's.
   */
  attempt: number;
  /** The current offer's reply subject's last token: `<number>-<attempt>`. */
  token: string;
  /** Unique across gateways: names the current offer to the instances (cancel, resend). */
  requestId: string;
  /** With a queue-group offer, the instances known then: any of them may have it. */
  candidates: string[];
  readonly clientId: JsonRpcId;
  phase: Phase;
  /** The instance that accepted it. */
  instanceId?: string;
  /** The instance that holds its session, when known: it is sent there. */
  pinnedTo?: string;
  /** Offered for any instance to take (not pinned), and counted in the gateway's offers. */
  viaQueue: boolean;
  /** Offered to one instance's own subject in place of the queue group (while suspects). */
  directed: boolean;
  /** Cancelled by the client while offered: cancelled on acceptance. */
  cancelRequested: boolean;
  /** Its queue deadline passed while offered. */
  expired: boolean;
  acceptedAt: number;
  timer?: ReturnType<typeof setTimeout>;
}

/** A new request, waiting: number `number` of gateway `gatewayId`. */
export function newRemoteCall(
  task: Task,
  number: number,
  gatewayId: string,
  pinnedTo: string | undefined,
): RemoteCall {
  const key = task.key;
  return {
    task,
    number,
    attempt: 0,
    token: String(number),
    requestId: `${gatewayId}-${number}`,
    candidates: [],
    clientId: typeof key === "string" || typeof key === "number" || key === null
      ? key
      : String(key),
    phase: "waiting",
    pinnedTo,
    viaQueue: false,
    directed: false,
    cancelRequested: false,
    expired: false,
    acceptedAt: 0,
  };
}

/**
 * The requests not answered yet, by their current offer's token (what comes on the gateway's
 * inbox names it) and by their client's key (what `$/cancelRequest` names).
 */
export class CallTable {
  #byToken = new Map<string, RemoteCall>();
  #byKey = new Map<unknown, RemoteCall>();

  get size(): number {
    return this.#byToken.size;
  }

  add(call: RemoteCall): void {
    this.#byToken.set(call.token, call);
    if (call.task.key !== undefined) this.#byKey.set(call.task.key, call);
  }

  /** The request whose current offer has this token. */
  get(token: string): RemoteCall | undefined {
    return this.#byToken.get(token);
  }

  byKey(key: unknown): RemoteCall | undefined {
    return this.#byKey.get(key);
  }

  /** A new offer of `call`: its own token and request id, the earlier one's forgotten. */
  nextOffer(call: RemoteCall, gatewayId: string): void {
    this.#byToken.delete(call.token);
    call.attempt++;
    call.token = `${call.number}-${call.attempt}`;
    call.requestId = `${gatewayId}-${call.token}`;
    this.#byToken.set(call.token, call);
  }

  remove(call: RemoteCall): void {
    this.#byToken.delete(call.token);
    if (this.#byKey.get(call.task.key) === call) this.#byKey.delete(call.task.key);
  }

  /** A copy: the caller may answer (and so remove) them as it goes. */
  all(): RemoteCall[] {
    return [...this.#byToken.values()];
  }

  inPhase(phase: Phase): RemoteCall[] {
    return this.all().filter((call) => call.phase === phase);
  }

  /** The requests that instance `id` accepted (answered or not). */
  acceptedBy(id: string): RemoteCall[] {
    return this.all().filter((call) => call.instanceId === id);
  }
}
