/**
 * Which worker holds each server-held session, and what became of sessions that are gone.
 * A session lives in one worker's memory: requests that name it must run there. It expires
 * after an idle TTL, moves with its worker when that worker is recycled on purpose, and is
 * lost (error -32004) when its worker dies.
 *
 * @module
 */

import { ErrorCode, invalidParams, RpcError } from "../lib/errors.ts";

interface Session {
  workerId: string;
  /** The tenant that created it; only that tenant's requests may use it. */
  tenant: string | undefined;
  lastUsedAt: number;
  /** Names that could not move with the session, reported once by the next response. */
  movedDropped?: string[];
}

/** Remembered ids of lost sessions, so that their next use gets a clear error, not a blank. */
const MAX_TOMBSTONES = 10_000;

interface Tombstone {
  reason: string;
  /** The session's tenant: only its requests are told, and another's is refused. */
  tenant: string | undefined;
  /** The worker that lost it, which remembers it too (for a request already on its way). */
  workerId?: string;
}

const notOwner = (id: string) =>
  invalidParams(
    "tenant",
    `does not own session ${JSON.stringify(id)}: a session belongs to the tenant that created it`,
  );

export class SessionRegistry {
  #sessions = new Map<string, Session>();
  /**
   * Sessions whose first request was admitted and has not finished: claimed for its tenant at
   * once, so that another tenant's request that comes meanwhile is refused too.
   */
  #claims = new Map<string, { tenant: string | undefined; at: number }>();
  #tombstones = new Map<string, Tombstone>();

  /**
   * @param onReported A lost session was reported to a client: the worker that lost it must
   * forget it too, so that the id names a new session from then on.
   */
  constructor(
    readonly ttlMs: number,
    private readonly onReported: (id: string, workerId: string) => void = () => {},
  ) {}

  /**
   * The worker that holds `id`; undefined for a new session; throws -32004 for a lost one, once,
   * to a request of its tenant (another tenant's is refused, -32602).
   */
  workerOf(id: string, tenant: string | undefined): string | undefined {
    const session = this.#sessions.get(id);
    if (session) return session.workerId;
    const tombstone = this.#tombstones.get(id);
    if (tombstone !== undefined) {
      const { reason, workerId } = tombstone;
      if (tombstone.tenant !== tenant) throw notOwner(id);
      this.#tombstones.delete(id);
      if (workerId !== undefined) this.onReported(id, workerId);
      throw new RpcError(ErrorCode.SessionNotFound, `session ${JSON.stringify(id)} ${reason}`, {
        session_id: id,
        reason,
        hint: "its namespace is gone; start again, or keep state client-side with return_session",
      });
    }
    return undefined;
  }

  /**
   * Claims `id` for `tenant` if no one has it yet; throws -32602 if it exists, or was claimed,
   * for another tenant.
   */
  claim(id: string, tenant: string | undefined): void {
    const owner = this.#sessions.get(id) ?? this.#claims.get(id);
    if (owner === undefined) {
      this.#claims.set(id, { tenant, at: performance.now() });
      return;
    }
    if (owner.tenant !== tenant) throw notOwner(id);
  }

  /**
   * Whether `id` names a session here: held, being created, or lost and not yet reported (its
   * next request is told so). Another tenant's counts too: its requests are refused here.
   */
  knows(id: string): boolean {
    return this.#sessions.has(id) || this.#claims.has(id) || this.#tombstones.has(id);
  }

  countOn(workerId: string): number {
    let count = 0;
    for (const session of this.#sessions.values()) if (session.workerId === workerId) count++;
    return count;
  }

  /** Records that `id` ran on `workerId` now (creating the session on first use). */
  touch(id: string, workerId: string, tenant: string | undefined): void {
    const session = this.#sessions.get(id);
    if (session) session.lastUsedAt = performance.now();
    else this.#sessions.set(id, { workerId, tenant, lastUsedAt: performance.now() });
    this.#claims.delete(id);
  }

  /** Sessions that their worker lost (dropped past its parking limit, say), and why. */
  lose(ids: string[], workerId: string, why: string): void {
    for (const id of ids) {
      if (this.#sessions.get(id)?.workerId === workerId) this.#forget(id, why, workerId);
    }
  }

  /** The worker itself reported `id` lost to a client (a request sent before it said so). */
  reported(id: string): void {
    this.#tombstones.delete(id);
  }

  /** The names a move dropped, once: the next response for the session reports them. */
  takeMoveReport(id: string): string[] | undefined {
    const session = this.#sessions.get(id);
    const dropped = session?.movedDropped;
    if (session) session.movedDropped = undefined;
    return dropped;
  }

  /**
   * Sessions idle past the TTL: forgotten here, to be dropped by their workers. A session that a
   * request running or waiting names (`inUse`) is not idle.
   */
  expire(
    now = performance.now(),
    inUse: ReadonlySet<string> = new Set(),
  ): { id: string; workerId: string }[] {
    // A claim whose first request never finished.
    for (const [id, claim] of this.#claims) {
      if (now - claim.at >= this.ttlMs) this.#claims.delete(id);
    }
    const expired: { id: string; workerId: string }[] = [];
    for (const [id, session] of this.#sessions) {
      if (now - session.lastUsedAt < this.ttlMs || inUse.has(id)) continue;
      expired.push({ id, workerId: session.workerId });
      this.#forget(id, `expired after ${Math.round(this.ttlMs / 1000)} s without use`);
    }
    return expired;
  }

  /**
   * Forgets sessions idle past the TTL, and claims as old, leaving no tombstone: for a NATS
   * gateway, which only remembers where sessions are (their instances expire them, and tell),
   * and finds a session it forgot again by asking the instances.
   */
  forgetIdle(now = performance.now()): void {
    for (const [id, claim] of this.#claims) {
      if (now - claim.at >= this.ttlMs) this.#claims.delete(id);
    }
    for (const [id, session] of this.#sessions) {
      if (now - session.lastUsedAt >= this.ttlMs) this.#sessions.delete(id);
    }
  }

  /** A worker died: its sessions are lost. */
  loseWorker(workerId: string, why: string): void {
    for (const [id, session] of this.#sessions) {
      if (session.workerId === workerId) this.#forget(id, why);
    }
  }

  /**
   * Sessions moved to another worker; `dropped` names what each could not take along, `failed`
   * those that could not move, with why.
   */
  move(
    fromWorkerId: string,
    toWorkerId: string,
    dropped: Record<string, string[]>,
    failed: Record<string, string>,
  ): void {
    for (const [id, session] of this.#sessions) {
      if (session.workerId !== fromWorkerId) continue;
      if (id in failed) {
        this.#forget(id, failed[id]);
        continue;
      }
      session.workerId = toWorkerId;
      session.movedDropped = dropped[id] ?? [];
    }
  }

  /** Whether `id` is a live session of `tenant`'s. */
  isOwnedBy(id: string, tenant: string): boolean {
    const session = this.#sessions.get(id);
    return session !== undefined && session.tenant === tenant;
  }

  idsOn(workerId: string): string[] {
    return [...this.#sessions].filter(([, s]) => s.workerId === workerId).map(([id]) => id);
  }

  #forget(id: string, reason: string, workerId?: string): void {
    const tenant = this.#sessions.get(id)?.tenant;
    this.#sessions.delete(id);
    this.#tombstones.set(id, { reason, tenant, workerId });
    if (this.#tombstones.size > MAX_TOMBSTONES) {
      this.#tombstones.delete(this.#tombstones.keys().next().value!);
    }
  }
}
