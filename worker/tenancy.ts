/**
 * Whose state the interpreter holds, and what must be put back before the next request runs:
 * the isolation policy of one worker (`--isolation`).
 *
 * - `request`: every request starts from the base image, unless it continues its own session;
 * - `tenant`: requests of one tenant follow each other on the cheap Python-level reset; the
 *   image is put back when the tenant changes;
 * - `none`: the Python-level reset only, one interpreter for everyone (a trusted user's batch).
 *
 * A session owns its state: it stays live while its own requests follow each other, is parked
 * (its differences from the base, `SessionImage`) before anyone else's code runs, and is
 * resumed when its next request comes. Parked sessions are bounded by `maxParkedBytes`; past
 * it, the least recently used is dropped, and its next request is refused with a reason.
 *
 * @module
 */

import { BaseImage, SessionImage } from "./image/interpreter_image.ts";
import type { ImagedInterpreter } from "./image/interpreter_image.ts";
import { MemoryPatch } from "./image/memory_image.ts";

import type { Isolation } from "../lib/protocol.ts";

/** Who a request runs for. */
export interface Owner {
  tenant?: string;
  sessionId?: string;
}

/**
 * How the interpreter was reset after a request: the image put back, the Python-level reset,
 * or nothing (the request's code never ran).
 */
export type ResetKind = "image" | "python" | "none";

/** A session that is gone, and why: its next request gets this reason. */
export class SessionLostError extends Error {
  constructor(readonly sessionId: string, readonly reason: string) {
    super(`session ${JSON.stringify(sessionId)} ${reason}`);
    this.name = "SessionLostError";
  }
}

/** A session named by a request of another tenant than the one that created it. */
export class SessionRefusedError extends Error {
  constructor(readonly sessionId: string) {
    super(
      `session ${JSON.stringify(sessionId)} belongs to another tenant: a session belongs to ` +
        "the tenant that created it",
    );
    this.name = "SessionRefusedError";
  }
}

/** What `enter` did, for the stats. */
export interface EnterReport {
  /** Whether the run starts from the base image just put back (Python's `random` is reseeded). */
  fresh: boolean;
  /** Time to put the base image back before the run (the tenant changed). */
  restoreMs?: number;
  parkMs?: number;
  resumeMs?: number;
  /** Bytes of the session image resumed. */
  resumedBytes?: number;
}

/** The Python side's cheap reset; returns why it failed, if it did. */
export type PythonReset = () => string | undefined;

interface Parked {
  image: SessionImage;
  usedAt: number;
  /** Compression was tried and did not pay: not tried again. */
  incompressible?: boolean;
}

/** A session as it moves to another worker (`exportSessions`), or why it cannot. */
export type ExportedSession =
  | {
    /** The base image it was taken against: the importing worker must hold the same. */
    base: string;
    /** The tenant that created it. */
    tenant?: string;
    byte_length: number;
    /** Lengths of its worker's tables: its memory may name any slot below them. */
    hiwire_length: number;
    table_length: number;
    /** Strings Pyodide interned since the base, which its memory names by index. */
    immortals: string[];
    /** The runs of pages held, `[first, end)` page indices, as little-endian 32-bit words. */
    runs_b64: string;
    data_b64: string;
    packages: Record<string, string>;
  }
  | { error: string };

/** Remembered reasons of dropped sessions, so that their next request is refused, not blank. */
const MAX_LOST = 10_000;

/** The key of a request's state: its session, its tenant (in `tenant` mode), or none. */
function ownerKey(mode: Isolation, owner: Owner): string | undefined {
  if (owner.sessionId !== undefined) return `session:${owner.sessionId}`;
  if (mode === "tenant" && owner.tenant !== undefined) return `tenant:${owner.tenant}`;
  return undefined;
}

export class Tenancy {
  #base: BaseImage | undefined;
  /** The state in memory: whose it is (undefined: a request of no one), on which base. */
  #live: { key: string | undefined; sessionId?: string; base: BaseImage } | undefined;
  /** Whether memory is exactly the base image (nothing ran since it was put back). */
  #pristine = true;
  readonly #parked = new Map<string, Parked>();
  /** The tenant of each session this worker holds (undefined: a request that named none). */
  readonly #tenants = new Map<string, string | undefined>();
  /** Sessions dropped, until their tenant is told (or the supervisor says it told it). */
  readonly #lost = new Map<string, { reason: string; tenant: string | undefined }>();
  /** Sessions dropped since the last `takeDropped`, with their reasons. */
  #dropped: { sessionId: string; reason: string }[] = [];

  /** `interpreter` is needed unless `mode` is `none`. */
  constructor(
    readonly mode: Isolation,
    private readonly interpreter: ImagedInterpreter | undefined,
    private readonly maxParkedBytes: number,
  ) {}

  /** Takes the base image: once the worker is ready, with no request run yet. */
  start(): void {
    if (this.mode === "none") return;
    this.#base = BaseImage.take(this.interpreter!);
    this.#live = { key: undefined, base: this.#base };
    this.#pristine = true;
  }

  /**
   * Makes memory hold `owner`'s state before its request runs: parks the session in memory if
   * it is someone else's, puts the base back, resumes the owner's parked session.
   * Throws SessionLostError for a session that was dropped, SessionRefusedError for a session
   * of another tenant.
   */
  enter(owner: Owner): EnterReport {
    if (this.mode === "none") return { fresh: false };
    const { sessionId, tenant } = owner;
    if (sessionId !== undefined) {
      const lost = this.#lost.get(sessionId);
      if (lost !== undefined) {
        if (lost.tenant !== tenant) throw new SessionRefusedError(sessionId);
        // Said once, to its tenant: after it, the id names a new session.
        this.#lost.delete(sessionId);
        throw new SessionLostError(sessionId, lost.reason);
      }
      if (this.#tenants.has(sessionId) && this.#tenants.get(sessionId) !== tenant) {
        throw new SessionRefusedError(sessionId);
      }
    }
    const key = ownerKey(this.mode, owner);
    const live = this.#live!;
    if (key !== undefined && key === live.key) return { fresh: false };
    const report: EnterReport = { fresh: false };
    // Out of the parked set first: parking the live session must not evict it.
    const parked = sessionId === undefined ? undefined : this.#parked.get(sessionId);
    if (parked) this.#parked.delete(sessionId!);
    report.parkMs = this.#parkLive();
    if (report.parkMs !== undefined) this.enforceLimit();
    if (parked) {
      const started = performance.now();
      parked.image.base.restore();
      parked.image.base.apply(parked.image);
      report.resumedBytes = parked.image.bytes;
      parked.image.release();
      report.resumeMs = performance.now() - started;
      this.#live = { key, sessionId, base: parked.image.base };
      this.#pristine = false;
      return report;
    }
    if (!this.#pristine || live.base !== this.#base) {
      const started = performance.now();
      this.#restoreBase();
      report.restoreMs = performance.now() - started;
    }
    this.#live = { key, sessionId, base: this.#base! };
    if (sessionId !== undefined) this.#tenants.set(sessionId, tenant);
    report.fresh = true;
    return report;
  }

  /** Packages were just loaded: if memory held the base, the base now includes them. */
  packagesLoaded(): void {
    if (this.mode === "none" || !this.#pristine) return;
    this.#base = BaseImage.take(this.interpreter!);
    this.#live = { ...this.#live!, base: this.#base };
  }

  /** Marks that request code ran: memory is no longer the base. */
  ran(): void {
    this.#pristine = false;
  }

  /**
   * After a request's answer: puts the base back for a request of no one, or runs the cheap
   * reset for one whose owner may come back. A failed cheap reset loses the owner's state.
   */
  leave(pythonReset: PythonReset): ResetKind {
    const live = this.#live!;
    if (this.#pristine) return "none";
    if (live.key === undefined) {
      this.#restoreBase();
      this.#live = { key: undefined, base: this.#base! };
      return "image";
    }
    const failure = pythonReset();
    this.interpreter!.handles.prune();
    if (failure === undefined) return "python";
    if (live.sessionId !== undefined) this.#lose(live.sessionId, `was lost: ${failure}`);
    this.#restoreBase();
    this.#live = { key: undefined, base: this.#base! };
    return "image";
  }

  /**
   * Renews the interpreter at the worker's request limit: the base image put back, the
   * interpreter a new worker process would start with. Sessions are kept (the live one parked
   * first), as a process replacement would have moved them; a tenant's live state is dropped, as
   * it would have been.
   */
  renew(): void {
    if (this.#parkLive() !== undefined) this.enforceLimit();
    this.#backToBase();
  }

  /**
   * The interpreter crashed, its memory in whatever state the crash left: puts the base back.
   * The session whose state was live is lost with `reason`; parked ones are intact.
   */
  recover(reason: string): void {
    const live = this.#live!;
    if (live.sessionId !== undefined) this.#lose(live.sessionId, reason);
    this.#restoreBase();
    this.#live = { key: undefined, base: this.#base! };
  }

  /**
   * Drops a session, live or parked, or forgets that it was lost (the client was told); false
   * if this worker does not hold it.
   */
  dropSession(sessionId: string): boolean {
    this.#tenants.delete(sessionId);
    this.#lost.delete(sessionId);
    if (this.#live?.sessionId === sessionId) {
      this.#restoreBase();
      this.#live = { key: undefined, base: this.#base! };
      return true;
    }
    const parked = this.#parked.get(sessionId);
    parked?.image.release();
    return this.#parked.delete(sessionId);
  }

  /**
   * Every session this worker holds, for the worker that replaces it: the live one is parked
   * first. A session moves as its memory pages; one that holds JavaScript objects or changed
   * files cannot move (those live outside the memory), and says so.
   */
  async exportSessions(maxBytes: number): Promise<Record<string, ExportedSession>> {
    this.#parkLive();
    this.#backToBase();
    const exported: Record<string, ExportedSession> = {};
    let room = maxBytes;
    for (const [id, { image }] of this.#parked) {
      const bound = image.base.whyBound(image);
      if (bound !== undefined) {
        exported[id] = { error: bound };
        continue;
      }
      // The others still move: one line carries them all.
      const bytes = image.memory.dataBytes;
      if (bytes > room) {
        exported[id] = {
          error: `is too large to move (${bytes} bytes of memory; ${room} of the ${maxBytes} ` +
            "one move carries were left)",
        };
        continue;
      }
      room -= bytes;
      exported[id] = {
        base: await image.base.fingerprint(),
        tenant: this.#tenants.get(id),
        byte_length: image.memory.byteLength,
        hiwire_length: image.wasm.hiwireLength,
        table_length: image.wasm.tableLength,
        immortals: image.wasm.immortals as string[],
        runs_b64: new Uint8Array(image.memory.runs.buffer).toBase64(),
        data_b64: image.memory.data.toBase64(),
        packages: image.packages,
      };
    }
    return exported;
  }

  /** Parks sessions exported by another worker; returns those refused, with why. */
  async importSessions(
    exported: Record<string, ExportedSession>,
  ): Promise<Record<string, string>> {
    const failed: Record<string, string> = {};
    const base = this.#base!;
    const fingerprint = await base.fingerprint();
    for (const [id, session] of Object.entries(exported)) {
      if ("error" in session) {
        failed[id] = session.error;
      } else if (session.base !== fingerprint) {
        failed[id] = "was made on another base image (another Pyodide build, snapshot or set " +
          "of pool-wide packages) than the worker that replaced its own";
      } else if (!base.adopt(session.immortals)) {
        failed[id] = "names strings that the worker that replaced its own has interned " +
          "differently (it served other requests first)";
      } else {
        const runs = Uint8Array.fromBase64(session.runs_b64);
        const memory = new MemoryPatch(
          session.byte_length,
          new Uint32Array(runs.buffer, runs.byteOffset, runs.byteLength / 4),
          Uint8Array.fromBase64(session.data_b64),
        );
        const wasm = {
          entries: [],
          deduplicated: [],
          immortals: session.immortals,
          hiwireLength: session.hiwire_length,
          tableLength: session.table_length,
        };
        const image = new SessionImage(base, memory, wasm, undefined, undefined, session.packages);
        this.#parked.set(id, { image, usedAt: performance.now() });
        this.#tenants.set(id, session.tenant);
      }
    }
    this.enforceLimit();
    return failed;
  }

  /** Bytes held by parked sessions, and by the older bases only they still need. */
  get parkedBytes(): number {
    let bytes = 0;
    const bases = new Set<BaseImage>();
    for (const { image } of this.#parked.values()) {
      bytes += image.bytes;
      if (image.base !== this.#base) bases.add(image.base);
    }
    for (const base of bases) bytes += base.bytes;
    return bytes;
  }

  /** Parked sessions, with their sizes. */
  parkedSessions(): { session_id: string; bytes: number }[] {
    return [...this.#parked].map(([id, { image }]) => ({ session_id: id, bytes: image.bytes }));
  }

  /**
   * While parked sessions hold more than the limit: compresses the least recently used one not
   * tried yet (its resume then takes longer: it is inflated), and once none is left to try,
   * drops the least recently used.
   */
  enforceLimit(): void {
    const leastRecent = (entries: [string, Parked][]) =>
      entries.reduce<[string, Parked] | undefined>(
        (oldest, entry) => !oldest || entry[1].usedAt < oldest[1].usedAt ? entry : oldest,
        undefined,
      );
    while (this.parkedBytes > this.maxParkedBytes && this.#parked.size > 0) {
      const untried = leastRecent(
        [...this.#parked].filter(([, p]) => !p.image.memory.compressed && !p.incompressible),
      );
      if (untried) {
        untried[1].incompressible = !untried[1].image.memory.compress();
        continue;
      }
      // A session that cannot fit alone goes first, rather than everyone older.
      const oversized = [...this.#parked].find(([, p]) => p.image.bytes > this.maxParkedBytes);
      const [id, dropped] = oversized ?? leastRecent([...this.#parked])!;
      dropped.image.release();
      this.#parked.delete(id);
      const limit = `--max-parked-mb (${Math.round(this.maxParkedBytes / 2 ** 20)} MB)`;
      this.#lose(
        id,
        oversized
          ? `was dropped: parked, it held more than ${limit} alone, even compressed`
          : `was dropped: parked sessions of its worker held more than ${limit} even ` +
            "compressed, and it was the least recently used",
      );
    }
  }

  /** Sessions dropped since the last call, for the supervisor. */
  takeDropped(): { sessionId: string; reason: string }[] {
    const dropped = this.#dropped;
    this.#dropped = [];
    return dropped;
  }

  /** Whether the interpreter's tables grew past what the worker should keep. */
  get overgrown(): boolean {
    return this.#base?.overgrown ?? false;
  }

  /**
   * Parks the live session, if memory holds one's state (the caller then enforces the bound);
   * returns the time it took.
   */
  #parkLive(): number | undefined {
    const live = this.#live!;
    if (live.sessionId === undefined || this.#pristine) return undefined;
    const started = performance.now();
    this.#parked.set(live.sessionId, { image: live.base.diff(), usedAt: performance.now() });
    return performance.now() - started;
  }

  /** Memory back to the base image, held by no one. */
  #backToBase(): void {
    if (!this.#pristine || this.#live!.base !== this.#base) this.#restoreBase();
    this.#live = { key: undefined, base: this.#base! };
  }

  #restoreBase(): void {
    this.#base!.restore();
    this.#pristine = true;
  }

  #lose(sessionId: string, reason: string): void {
    this.#lost.set(sessionId, { reason, tenant: this.#tenants.get(sessionId) });
    this.#tenants.delete(sessionId);
    if (this.#lost.size > MAX_LOST) this.#lost.delete(this.#lost.keys().next().value!);
    this.#dropped.push({ sessionId, reason });
  }
}
