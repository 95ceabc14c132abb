/**
 * Instance mode (--nats URL): the supervisor's pool serves the methods of a NATS service, as
 * well as its own stdin/stdout. A request reaches it on the service's queue group, through
 * one subscription per idle worker: an instance with no idle worker is not a member, so it
 * is never handed a request it cannot start now, and with no member at all NATS answers "no
 * responders" at once. A request that still finds no room (stdin's requests took the worker
 * meanwhile) is declined before anything runs, and the gateway sends it elsewhere. A session's
 * requests come on the instance's own subject, and so do cancellation, health and stats.
 * The contract is subjects.ts.
 *
 * @module
 */

import type { Msg, NatsConnection, Subscription } from "@nats-io/transport-node";
import type { Config } from "../config.ts";
import { toRpcError } from "../../lib/errors.ts";
import { logger } from "../../lib/logging.ts";
import { type ExecuteParams, parseExecuteParams } from "../../lib/protocol.ts";
import type { Pool } from "../pool.ts";
import { connectNats, watchConnection } from "./connect.ts";
import { ServiceEndpoints } from "./service_protocol.ts";
import {
  ContractError,
  contractRpcError,
  encode,
  type ExecuteRequest,
  type Heartbeat,
  HEARTBEAT_MS,
  type InstanceSubjects,
  NATS_PROTOCOL,
  parseCancel,
  parseExecuteRequest,
  parseResendRequest,
  parseSessionQuery,
  type Reply,
  type ResendReply,
  type ServiceSubjects,
  serviceSubjects,
  type SessionHolder,
} from "./subjects.ts";
import { publishBody, Reassembler } from "./wire.ts";

/** How long an answer is kept after it was sent, for a gateway that lost it with NATS. */
const KEEP_ANSWERS_MS = 30_000;
/** The most bytes of answers kept for that. */
const KEEP_ANSWERS_BYTES = 64 << 20;

/** How long a request looked up and not found is refused, should it come after all. */
const REFUSE_MS = 120_000;
/**
 * The most requests refused at once. Anyone on the account may publish a lookup: without a
 * bound, made-up ids would pile up for REFUSE_MS. A gateway's own lookups need few (one
 * request each, refused only for one that comes after its lookup despite NATS's ordering).
 */
const MAX_REFUSED = 100_000;

/** A request this instance accepted and runs. */
interface Running {
  /** The pool's key for it (an object: no client id can equal it). */
  key: { requestId: string };
  reply: string;
}

/**
 * How a request reached the instance: the queue group, or its own subject (a session's request,
 * or one a gateway sent it directly while another instance may be stalled).
 */
type Route = "queue" | "own";

export class NatsInstance {
  readonly subjects: ServiceSubjects;
  readonly own: InstanceSubjects;
  #nc: NatsConnection | undefined;
  /** The queue-group subscriptions held, one per request the pool could start now. */
  #slots = new Set<Subscription>();
  #running = new Map<string, Running>();
  #answers = new KeptAnswers();
  /** Requests a gateway looked up before they came: refused if they come, so none runs twice. */
  #refused = new Map<string, number>();
  #reader = new Reassembler((why) => this.#log.warn("dropped a chunked request: {why}", { why }));
  #leaving = false;
  #advertised = 0;
  #heartbeatTimer: ReturnType<typeof setInterval> | undefined;
  #endpoints: ServiceEndpoints | undefined;
  #log = logger("nats", "instance");

  constructor(
    private readonly pool: Pool,
    private readonly config: Config,
    readonly id: string,
  ) {
    this.subjects = serviceSubjects(config.natsService);
    this.own = this.subjects.instance(id);
  }

  /** Connects (retrying until a server answers) and starts serving. */
  async start(): Promise<void> {
    const nc = await connectNats(this.config, `pyodide-pool instance ${this.id}`);
    if (this.#leaving) {
      await nc.close();
      return;
    }
    this.#nc = nc;
    watchConnection(nc, {
      reconnected: () => {
        this.#answers.restamp();
        this.#heartbeat();
      },
    });
    const { subjects, own } = this;
    const endpoints = this.#endpoints = new ServiceEndpoints(nc, {
      name: this.config.natsService,
      id: this.id,
      description: "pyodide-pool: Python in sandboxed Pyodide workers (JSON-RPC execute)",
      metadata: { protocol: String(NATS_PROTOCOL) },
    });
    endpoints.add("execute", subjects.execute, subjects.queue);
    endpoints.add("packages", subjects.packages, subjects.queue);
    endpoints.add("execute_direct", own.execute);
    nc.subscribe(own.execute, { callback: (_, msg) => this.#onRequest(msg, "own") });
    nc.subscribe(subjects.packages, {
      queue: subjects.queue,
      callback: (_, msg) => {
        this.#respond(msg, "packages", () => this.pool.packagesReport());
      },
    });
    nc.subscribe(own.cancel, { callback: (_, msg) => this.#onCancel(msg) });
    nc.subscribe(own.ping, {
      callback: (_, msg) => {
        this.#reply(msg, encode({ instance_id: this.id }));
      },
    });
    nc.subscribe(own.health, {
      callback: (_, msg) => {
        this.#respond(msg, "health", () => this.pool.health());
      },
    });
    nc.subscribe(own.stats, {
      callback: (_, msg) => {
        this.#respond(msg, "stats", () => this.pool.statsReport());
      },
    });
    nc.subscribe(own.resend, { callback: (_, msg) => this.#onResend(msg, false) });
    nc.subscribe(subjects.lookup, { callback: (_, msg) => this.#onResend(msg, true) });
    nc.subscribe(subjects.sessions, { callback: (_, msg) => this.#onSessionQuery(msg) });
    nc.subscribe(subjects.discover, { callback: () => this.#heartbeat() });
    endpoints.start();
    this.pool.onChange(() => this.#reconcile());
    this.#heartbeatTimer = setInterval(() => this.#reconcile(true), HEARTBEAT_MS);
    this.#reconcile(true);
    this.#log.info("serving NATS service {service} as instance {id}", {
      service: this.config.natsService,
      id: this.id,
    });
  }

  /**
   * Takes no new requests from the queue group (requests already accepted still run, and are
   * answered): the gateways hear that it leaves, and its sessions end with it.
   */
  async leave(): Promise<void> {
    if (this.#leaving) return;
    this.#leaving = true;
    if (this.#nc === undefined) return;
    this.#heartbeat();
    await Promise.all([...this.#slots].map((slot) => this.#releaseSlot(slot)));
  }

  /** Sends what is still to be sent and closes the connection. */
  async close(): Promise<void> {
    await this.leave();
    clearInterval(this.#heartbeatTimer);
    this.#reader.close();
    const nc = this.#nc;
    if (nc === undefined || nc.isClosed()) return;
    await nc.drain().catch(() => {});
  }

  /** Holds as many queue-group subscriptions as the pool could start requests now. */
  #reconcile(heartbeat = false): void {
    const nc = this.#nc;
    if (nc === undefined || nc.isClosed() || nc.isDraining()) return;
    const target = this.#leaving ? 0 : this.pool.freeSlots();
    while (this.#slots.size < target) {
      const slot: Subscription = nc.subscribe(this.subjects.execute, {
        queue: this.subjects.queue,
        callback: (_, msg) => {
          // A slot serves one request: dropped now, and taken again once the pool has room.
          if (this.#slots.has(slot)) this.#releaseSlot(slot);
          this.#onRequest(msg, "queue");
          this.#reconcile();
        },
      });
      this.#slots.add(slot);
    }
    for (const slot of this.#slots) {
      if (this.#slots.size <= target) break;
      this.#releaseSlot(slot);
    }
    // Gateways waiting for room hear at once that there is some.
    if (heartbeat || this.#slots.size > this.#advertised) this.#heartbeat();
    this.#advertised = this.#slots.size;
  }

  /**
   * Leaves the queue group on one subscription. A drain, not an unsubscribe: a request NATS
   * sent before it took the leave still reaches the callback (and is declined if there is no
   * room), rather than being dropped unanswered.
   */
  #releaseSlot(slot: Subscription): Promise<void> {
    this.#slots.delete(slot);
    return slot.drain().catch(() => {});
  }

  #heartbeat(): void {
    const nc = this.#nc;
    if (nc === undefined || nc.isClosed()) return;
    const health = this.pool.health();
    const beat: Heartbeat = {
      instance_id: this.id,
      protocol: NATS_PROTOCOL,
      state: this.#leaving ? "leaving" : "serving",
      free_slots: this.#leaving ? 0 : this.#slots.size,
      ready_workers: health.ready_workers,
      queue_depth: health.queue_depth,
    };
    try {
      nc.publish(this.subjects.heartbeat, encode(beat));
    } catch {
      // Closed: there is no one to tell.
    }
  }

  #onRequest(msg: Msg, route: Route): void {
    const reply = msg.reply;
    if (!reply) {
      this.#log.warn("an execute request without a reply subject on {subject}: dropped", {
        subject: msg.subject,
      });
      return;
    }
    const body = route === "own" ? this.#reader.take(msg) : msg.data;
    if (body === undefined) return;
    let request: ExecuteRequest;
    let params: ExecuteParams;
    try {
      request = parseExecuteRequest(body);
    } catch (error) {
      if (!(error instanceof ContractError)) throw error;
      this.#log.warn("refused a request that breaks the NATS contract: {error}", {
        error: error.message,
      });
      this.#send(reply, { kind: "error", error: this.#errorOf(contractRpcError(error)) });
      return;
    }
    const id = request.request_id;
    if (this.#running.has(id) || this.#answers.has(id)) {
      // The same request twice: it runs once, whatever sent it again.
      this.#log.warn("request {id} came again: ignored (it runs at most once)", { id });
      return;
    }
    try {
      params = parseExecuteParams(request.params);
    } catch (error) {
      this.#send(reply, { kind: "error", error: this.#errorOf(error) });
      return;
    }
    const refused = this.#refused.has(id);
    const needsIdle = route === "queue" || request.needs_idle_worker === true;
    if (refused || this.#leaving || (needsIdle && this.pool.freeSlots() === 0)) {
      const reason = refused
        ? "a gateway looked it up before it came"
        : this.#leaving
        ? "the instance is leaving"
        : "no idle worker";
      this.#log.debug("declined {id} (client id {client}): {reason}", {
        id,
        client: request.client_id,
        reason,
      });
      this.#send(reply, { kind: "declined", instance_id: this.id, reason });
      return;
    }
    this.#log.debug("accepted {id} (client id {client}) from the {route}", {
      id,
      client: request.client_id,
      route: route === "queue" ? "queue group" : "instance's own subject",
    });
    this.#send(reply, { kind: "accepted", instance_id: this.id });
    this.#run(id, params, reply, route);
  }

  async #run(id: string, params: ExecuteParams, reply: string, route: Route): Promise<void> {
    const started = performance.now();
    const running: Running = { key: { requestId: id }, reply };
    this.#running.set(id, running);
    let seq = 0;
    const onOutput = params.stream
      ? ({ stream, text }: { stream: string; text: string }) =>
        this.#send(reply, {
          kind: "output",
          seq: seq++,
          stream: stream === "stderr" ? "stderr" : "stdout",
          text,
        })
      : undefined;
    let answer: Reply;
    try {
      answer = { kind: "result", result: await this.pool.execute(params, running.key, onOutput) };
    } catch (error) {
      answer = { kind: "error", error: this.#errorOf(error) };
    }
    this.#running.delete(id);
    const body = encode(answer);
    this.#answers.keep(id, reply, body);
    this.#publish(reply, body);
    this.#endpoints?.record(
      route === "queue" ? "execute" : "execute_direct",
      performance.now() - started,
      answer.kind === "error" ? answer.error.message : undefined,
    );
  }

  #errorOf(error: unknown): Extract<Reply, { kind: "error" }>["error"] {
    const rpc = toRpcError(error).toJSON();
    return { ...rpc, data: { ...rpc.data, instance_id: this.id } };
  }

  #onCancel(msg: Msg): void {
    let requestId: string;
    try {
      requestId = parseCancel(msg.data).request_id;
    } catch (error) {
      this.#log.warn("ignored a cancel: {error}", { error: String(error) });
      return;
    }
    const running = this.#running.get(requestId);
    if (running === undefined || !this.pool.cancel(running.key)) {
      this.#log.debug("cancel {id}: nothing running with that id", { id: requestId });
    }
  }

  /**
   * `resend` (a gateway lost answers while NATS was away) or `lookup` (a gateway offered a
   * request that no instance acknowledged): the answers kept are sent again; with `lookup`, an
   * unknown request is refused from now on.
   */
  #onResend(msg: Msg, lookup: boolean): void {
    let ids: string[];
    try {
      ids = parseResendRequest(msg.data).request_ids;
    } catch (error) {
      this.#reply(msg, encode({ error: this.#errorOf(error) }));
      return;
    }
    const answer: ResendReply = { instance_id: this.id, finished: [], running: [], unknown: [] };
    const now = performance.now();
    for (const id of ids) {
      const kept = this.#answers.get(id);
      if (kept !== undefined) {
        answer.finished.push(id);
        this.#publish(kept.reply, kept.body);
      } else if (this.#running.has(id)) answer.running.push(id);
      else {
        answer.unknown.push(id);
        if (lookup) {
          this.#refused.delete(id);
          this.#refused.set(id, now);
        }
      }
    }
    // Oldest first (each id is put at the end when refused): the sweep stops at a recent one.
    for (const [id, at] of this.#refused) {
      if (now - at <= REFUSE_MS && this.#refused.size <= MAX_REFUSED) break;
      this.#refused.delete(id);
    }
    if (answer.finished.length > 0) {
      this.#log.info("sent {count} answers again, lost while NATS was away", {
        count: answer.finished.length,
      });
    }
    this.#reply(msg, encode(answer));
  }

  /** `sessions`: whether this instance knows the session a gateway asks about. */
  #onSessionQuery(msg: Msg): void {
    let sessionId: string;
    try {
      sessionId = parseSessionQuery(msg.data).session_id;
    } catch (error) {
      this.#log.warn("ignored a sessions query: {error}", { error: String(error) });
      return;
    }
    const held = this.pool.sessions.knows(sessionId);
    this.#reply(msg, encode({ instance_id: this.id, held } satisfies SessionHolder));
  }

  /** Answers a report request with the report, or the error it failed with. */
  async #respond(msg: Msg, what: string, report: () => unknown): Promise<void> {
    let body: Uint8Array;
    try {
      body = encode(await report());
    } catch (error) {
      body = encode({ error: this.#errorOf(error) });
    }
    if (!this.#reply(msg, body)) {
      // Too large for one message, say: the error fits.
      this.#reply(
        msg,
        encode({ error: this.#errorOf(new Error(`the ${what} report could not be sent`)) }),
      );
    }
  }

  /** Answers a request; false (logged) when it could not be sent. */
  #reply(msg: Msg, body: Uint8Array): boolean {
    try {
      msg.respond(body);
      return true;
    } catch (error) {
      this.#log.warn("could not answer on {subject}: {error}", {
        subject: msg.subject,
        error: String(error),
      });
      return false;
    }
  }

  #send(reply: string, message: Reply): void {
    this.#publish(reply, encode(message));
  }

  #publish(subject: string, body: Uint8Array): void {
    const nc = this.#nc;
    if (nc === undefined || nc.isClosed()) return;
    try {
      publishBody(nc, subject, body);
    } catch (error) {
      this.#log.warn("could not send on {subject}: {error}", { subject, error: String(error) });
    }
  }
}

/**
 * The answers sent lately, kept a while for a gateway that lost them while NATS was away
 * (the client drops what it could not send when it reconnects).
 */
class KeptAnswers {
  #answers = new Map<string, { reply: string; body: Uint8Array; at: number }>();
  #bytes = 0;

  keep(id: string, reply: string, body: Uint8Array): void {
    this.#answers.set(id, { reply, body, at: performance.now() });
    this.#bytes += body.byteLength;
    this.#trim();
  }

  has(id: string): boolean {
    return this.#answers.has(id);
  }

  get(id: string): { reply: string; body: Uint8Array } | undefined {
    return this.#answers.get(id);
  }

  /** NATS is back: what was sent while it was away is kept for the window from now. */
  restamp(): void {
    const now = performance.now();
    for (const answer of this.#answers.values()) answer.at = now;
  }

  #trim(): void {
    const oldest = performance.now() - KEEP_ANSWERS_MS;
    for (const [id, answer] of this.#answers) {
      if (answer.at >= oldest && this.#bytes <= KEEP_ANSWERS_BYTES) break;
      this.#answers.delete(id);
      this.#bytes -= answer.body.byteLength;
    }
  }
}
