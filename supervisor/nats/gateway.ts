/**
 * Gateway mode (--nats URL --gateway): a pool with no workers. It serves the client endpoints
 * unchanged (PoolApi) by forwarding every request to the instances of a NATS service
 * (instance.ts), over the contract in subjects.ts.
 *
 * A request is offered on the service's queue group, where each instance holds one
 * subscription per idle worker. The instance that takes it answers `accepted` at once: from
 * then on it runs there and nowhere else, and the gateway never sends it again. Only a request
 * that provably did not start is sent again: NATS answered "no responders" (no instance has
 * an idle worker: it waits in the gateway's queue, bounded by --max-queue, for an instance to
 * say it has room), or the instance declined it, or every instance that could have had it said
 * it does not (and refuses it from then on). A session's requests go to the instance that holds
 * it. While an instance given up for silence may still hold queue-group subscriptions (NATS keeps
 * a stalled client's), requests go by name to an instance heard to have an idle worker instead.
 * Each request is answered once (task.ts):
 *
 * - the instance's answer;
 * - -32001 when the instance running it dies: within liveness.ts's bound for an accepted
 *   request, or ACK_TIMEOUT_MS when no instance acknowledged it (the one NATS handed it to
 *   may have died first);
 * - a `timeout` result when the instance stays silent past the request's timeout,
 *   --timeout-grace and DEADLINE_GRACE_MS;
 * - -32000 when no instance is connected (at once), or all are busy and the queue is full;
 * - -32004 when the instance that held its session is gone.
 *
 * An answer that comes after that is dropped, and counted (`stats.gateway.late_replies`).
 *
 * @module
 */

import { type Msg, type NatsConnection, nuid } from "@nats-io/transport-node";
import { type Config, redactedUrls } from "../config.ts";
import { ErrorCode, RpcError } from "../../lib/errors.ts";
import { logger } from "../../lib/logging.ts";
import type {
  ExecuteParams,
  ExecuteResult,
  GatewayCounters,
  HealthReport,
  PackagesReport,
  StatsReport,
} from "../../lib/protocol.ts";
import type { ServedPool } from "../pool_api.ts";
import { SessionRegistry } from "../sessions.ts";
import { PoolStats } from "../stats.ts";
import { type Answer, type OutputListener, Task } from "../task.ts";
import { TaskQueue } from "../task_queue.ts";
import { type Fetched, gatewayHealth, gatewayStats } from "./aggregate.ts";
import * as answers from "./gateway_answers.ts";
import { answerOf } from "./gateway_answers.ts";
import {
  type Asker,
  askPackages,
  askResend,
  fetchReports,
  lookupRequest,
  sessionHolder,
  unsubscribed,
} from "./gateway_queries.ts";
import { connectNats, watchConnection } from "./connect.ts";
import { InstanceDirectory, SUSPECT_CHECK_MS } from "./directory.ts";
import { Liveness, RECONNECT_GRACE_MS } from "./liveness.ts";
import { CallTable, newRemoteCall, type RemoteCall } from "./remote_call.ts";
import { SessionPins } from "./session_pins.ts";
import {
  encode,
  type ExecuteRequest,
  NATS_PROTOCOL,
  parseHeartbeat,
  parseReply,
  type Reply,
  type ServiceSubjects,
  serviceSubjects,
} from "./subjects.ts";
import { isNoResponders, maxPayload, messageRoom, publishBody, Reassembler } from "./wire.ts";

/** An offered request that no instance acknowledged this long is given up (-32001). */
export const ACK_TIMEOUT_MS = 3000;
/** Past the request's own deadline and --timeout-grace, how long the gateway still waits. */
export const DEADLINE_GRACE_MS = 2000;
/** How often sessions idle past --session-ttl (and old claims) are forgotten here. */
const SESSION_SWEEP_MS = 1000;
/** At start, how long requests wait for the first heartbeat before being routed anyway. */
const DISCOVERY_MS = 500;
/** Without word from NATS at start, requests are answered (-32000) after this long. */
const START_WAIT_MS = 2000;
/** How often waiting requests try again without news of room, and instances are swept. */
const RETRY_MS = 100;

export class NatsGateway implements ServedPool {
  readonly stats = new PoolStats();
  readonly sessions: SessionRegistry;
  readonly subjects: ServiceSubjects;
  readonly id = nuid.next();
  #counters = { late_replies: 0, declined: 0, no_responders: 0, instances_lost: 0 };
  #nc: NatsConnection | undefined;
  #inbox = "";
  #directory: InstanceDirectory;
  #liveness: Liveness | undefined;
  #calls = new CallTable();
  /** Requests waiting for an instance with room (and those offered from here). */
  #queue: TaskQueue<RemoteCall>;
  /** Requests offered on the queue group and not yet accepted or refused. */
  #offers = 0;
  /** Instances being asked whether NATS still has them (#checkGone). */
  #checking = new Set<string>();
  #pins: SessionPins;
  #nextRequest = 0;
  #accepting = true;
  #connected = false;
  /** When the gateway last reconnected (ms, monotonic); never, at first. */
  #reconnectedAt = -Infinity;
  #ready: Promise<void>;
  #markReady!: () => void;
  #timer: ReturnType<typeof setInterval> | undefined;
  #reader = new Reassembler((why) => this.#log.warn("dropped a chunked answer: {why}", { why }));
  #log = logger("nats", "gateway");

  constructor(private readonly config: Config) {
    this.subjects = serviceSubjects(config.natsService);
    this.#queue = new TaskQueue(config.maxQueue);
    // The instances drop their sessions themselves: the gateway only forgets where they were.
    this.sessions = new SessionRegistry(config.sessionTtl * 1000);
    this.#pins = new SessionPins(this.sessions);
    this.#directory = new InstanceDirectory({
      room: () => this.#pump(),
      gone: (id, why, silent) => this.#instanceGone(id, why, silent),
    });
    this.#ready = new Promise((resolve) => this.#markReady = resolve);
  }

  /** Connects (retrying until a server answers), and learns the instances. */
  async start(): Promise<void> {
    const giveUp = setTimeout(() => this.#markReady(), START_WAIT_MS);
    const nc = await connectNats(this.config, `pyodide-pool gateway ${this.id}`);
    if (!this.#accepting) {
      await nc.close();
      return;
    }
    this.#nc = nc;
    this.#connected = true;
    this.#inbox = `_INBOX.${this.id}`;
    nc.subscribe(`${this.#inbox}.*`, { callback: (_, msg) => this.#onReply(msg) });
    nc.subscribe(this.subjects.heartbeat, {
      callback: (_, msg) => {
        try {
          const beat = parseHeartbeat(msg.data);
          if (beat.protocol !== NATS_PROTOCOL) {
            this.#log.warn(
              "instance {id} speaks NATS protocol {theirs}, this gateway {ours}: ignored",
              { id: beat.instance_id, theirs: beat.protocol, ours: NATS_PROTOCOL },
            );
            return;
          }
          this.#directory.heard(beat);
          this.#markReady();
        } catch (error) {
          this.#log.warn("ignored a heartbeat: {error}", { error: String(error) });
        }
      },
    });
    this.#liveness = new Liveness({
      nc,
      subjects: this.subjects,
      connected: () => this.#connected,
      reconnectedAt: () => this.#reconnectedAt,
      dead: (id, why, stalled) => this.#instanceDead(id, why, stalled),
    });
    watchConnection(nc, {
      disconnected: () => this.#disconnected(),
      reconnected: () => {
        this.#reconnected().catch((error) => this.#bug("after reconnecting", error));
      },
      closed: () => {
        this.#connected = false;
        // Closed for good (not by this gateway's own stop, which answered everything first):
        // nothing more can come.
        for (const call of this.#calls.all()) {
          this.#finish(
            call,
            call.phase === "waiting"
              ? answerOf(this.#notConnected("the NATS connection closed"))
              : answers.connectionClosed(call.instanceId),
          );
        }
      },
    });
    let suspectsCheckedAt = performance.now();
    let sessionsSweptAt = performance.now();
    this.#timer = setInterval(() => {
      const now = performance.now();
      this.#directory.sweep(now);
      if (now - suspectsCheckedAt >= SUSPECT_CHECK_MS) {
        suspectsCheckedAt = now;
        for (const id of this.#directory.suspects()) this.#checkGone(id);
      }
      if (now - sessionsSweptAt >= SESSION_SWEEP_MS) {
        sessionsSweptAt = now;
        this.sessions.forgetIdle(now);
      }
      this.#pump();
    }, RETRY_MS);
    nc.publish(this.subjects.discover);
    setTimeout(() => this.#markReady(), DISCOVERY_MS);
    await this.#ready;
    clearTimeout(giveUp);
    this.#log.info("gateway for NATS service {service}: {count} instances found", {
      service: this.config.natsService,
      count: this.#directory.size,
    });
  }

  execute(params: ExecuteParams, key: unknown, onOutput?: OutputListener): Promise<ExecuteResult> {
    try {
      return this.#take(params, key, onOutput);
    } catch (error) {
      // A request refused on admission (shutting down, another tenant's session).
      return Promise.reject(error);
    }
  }

  #take(params: ExecuteParams, key: unknown, onOutput?: OutputListener): Promise<ExecuteResult> {
    if (!this.#accepting) throw answers.shuttingDown();
    let pinnedTo: string | undefined;
    if (params.session_id !== undefined) {
      pinnedTo = this.sessions.workerOf(params.session_id, params.tenant);
      this.sessions.claim(params.session_id, params.tenant);
    }
    const maxMs = this.config.maxExecTimeout * 1000;
    const timeoutMs = Math.min(params.timeout_ms ?? this.config.execTimeout * 1000, maxMs);
    const task = new Task(params, key, onOutput, timeoutMs, this.stats.requests);
    const call = newRemoteCall(task, ++this.#nextRequest, this.id, pinnedTo);
    this.#calls.add(call);
    // The deadline covers the wait for NATS at start, too.
    task.expireInQueue(() => this.#expire(call));
    this.#admit(call).catch((error) => this.#bug("admitting a request", error));
    return task.answer;
  }

  /** Routes a new request, once the gateway knows the instances (at start, briefly). */
  async #admit(call: RemoteCall): Promise<void> {
    await this.#ready;
    if (call.phase !== "waiting") return;
    if (!this.#connected) {
      this.#finish(call, answerOf(this.#notConnected("not connected to NATS")));
      return;
    }
    if (call.pinnedTo === undefined && this.#directory.size === 0) {
      this.#finish(call, answerOf(this.#noInstances()));
      return;
    }
    const nc = this.#nc;
    if (nc !== undefined) {
      const error = await this.#pins.locate(
        call,
        (sessionId) => sessionHolder(this.#asker(nc), sessionId, this.#directory.size),
      );
      if (error !== undefined) this.#finish(call, answerOf(error));
    }
    if (call.phase !== "waiting") return;
    if (this.#queue.size === 0 && !this.#pins.blocked(call) && this.#mayOffer(call)) {
      this.#offer(call);
    } else this.#wait(call);
  }

  cancel(key: unknown): boolean {
    const call = this.#calls.byKey(key);
    if (call === undefined || call.phase === "done") return false;
    switch (call.phase) {
      case "waiting":
        this.#finish(call, answers.cancelledBeforeRun(call.clientId));
        break;
      case "offered":
        call.cancelRequested = true;
        break;
      case "running":
        this.#sendCancel(call);
        break;
    }
    return true;
  }

  async health(): Promise<HealthReport> {
    const fetched = await this.#fetchAll<HealthReport>("health");
    return gatewayHealth(fetched, {
      accepting: this.#accepting,
      queueDepth: this.#waitingCount(),
      inFlight: (id) => this.#calls.acceptedBy(id).length,
    });
  }

  ownsSession(id: string, tenant: string): boolean {
    return this.sessions.isOwnedBy(id, tenant);
  }

  async statsReport(): Promise<StatsReport> {
    const fetched = await this.#fetchAll<StatsReport>("stats");
    return gatewayStats(fetched, {
      uptimeMs: performance.now() - this.stats.startedAt,
      requests: this.stats.requests.toJSON(),
      requestsTotal: this.stats.requests.total,
      wait: this.stats.wait.summary(),
      run: this.stats.run.summary(),
      counters: this.counters(),
      isolation: this.config.isolation,
    });
  }

  /** What the gateway itself counted. */
  counters(): GatewayCounters {
    return {
      instances: this.#directory.size,
      ...this.#counters,
      queue_depth: this.#waitingCount(),
    };
  }

  async packagesReport(): Promise<PackagesReport> {
    await this.#ready;
    const nc = this.#nc;
    if (nc === undefined || !this.#connected) throw this.#notConnected("not connected to NATS");
    return await askPackages(this.#asker(nc), this.config.natsService);
  }

  async shutdown(graceMs: number, { drainQueue = false } = {}): Promise<void> {
    if (!this.#accepting) return;
    this.#accepting = false;
    const deadline = performance.now() + graceMs;
    if (!drainQueue) {
      this.#markReady();
      this.#failWaiting(answers.shuttingDown("the request never ran"));
    }
    while (this.#calls.size > 0 && performance.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    for (const call of this.#calls.all()) {
      if (call.phase === "running") this.#sendCancel(call);
      this.#finish(
        call,
        answerOf(answers.shuttingDown(
          call.phase === "waiting"
            ? "the request never ran"
            : "the gateway stopped before the request finished; it was cancelled",
        )),
      );
    }
    clearInterval(this.#timer);
    this.#liveness?.stop();
    this.#reader.close();
    const nc = this.#nc;
    if (nc !== undefined && !nc.isClosed()) await nc.drain().catch(() => {});
  }

  // -------------------------------------------------------------------------------------------
  // A request's way: waiting, offered, running, answered.
  // -------------------------------------------------------------------------------------------

  /**
   * Room for one more offer: as many as the instances said they have on the queue group; while
   * an instance is suspected of being stalled, an instance that said it has an idle worker.
   */
  #mayOffer(call: RemoteCall): boolean {
    if (call.pinnedTo !== undefined) return true;
    if (this.#directory.hasSuspects()) return this.#directory.roomiest() !== undefined;
    return this.#offers < Math.max(1, this.#directory.freeSlots());
  }

  /** Puts a request in the queue, or back to waiting in its place; full, it gets -32000. */
  #wait(call: RemoteCall): void {
    call.phase = "waiting";
    if (this.#queue.has(call) || this.#queue.push(call)) return;
    this.#finish(
      call,
      answers.allBusy(this.#waitingCount(), this.config.maxQueue, this.#directory.size),
    );
  }

  /** Offers waiting requests, oldest first, as far as the instances have room. */
  #pump(): void {
    if (!this.#connected || this.#queue.size === 0) return;
    for (const call of this.#queue) {
      if (call.phase !== "waiting") continue;
      try {
        if (!this.#pins.pin(call)) continue;
      } catch (error) {
        this.#finish(call, { outcome: "session_not_found", error: error as RpcError });
        continue;
      }
      if (!this.#mayOffer(call)) continue;
      this.#offer(call);
    }
  }

  #offer(call: RemoteCall): void {
    const nc = this.#nc!;
    const { task } = call;
    const elapsed = performance.now() - task.arrivedAt;
    // Whole milliseconds, as the pool sends its workers: the deadline covers the wait here.
    const remainingMs = Math.max(1, Math.round(task.timeoutMs - elapsed));
    this.#calls.nextOffer(call, this.id);
    const request: ExecuteRequest = {
      request_id: call.requestId,
      client_id: call.clientId,
      params: { ...task.params, timeout_ms: remainingMs },
    };
    const pinned = call.pinnedTo;
    // A stalled instance keeps its queue-group subscriptions until NATS drops it, and would
    // swallow what NATS hands it: meanwhile, requests go to an instance heard from, by name.
    const target = pinned ??
      (this.#directory.hasSuspects() ? this.#directory.roomiest() : undefined)
        ?.id;
    const directed = pinned === undefined && target !== undefined;
    if (directed) {
      request.needs_idle_worker = true;
      const known = this.#directory.get(target)!;
      known.freeSlots = Math.max(0, known.freeSlots - 1);
    }
    const body = encode(request);
    // A queue group's members each take a message: a chunked one would be torn apart.
    if (target === undefined && body.byteLength > messageRoom(nc)) {
      this.#finish(call, answers.tooLarge(body.byteLength, maxPayload(nc)));
      return;
    }
    const sessionId = task.params.session_id;
    if (pinned === undefined && sessionId !== undefined) this.#pins.offered(sessionId);
    call.phase = "offered";
    call.viaQueue = pinned === undefined;
    call.directed = directed;
    call.candidates = target === undefined
      ? [...this.#directory.values()].map((i) => i.id)
      : [target];
    if (call.viaQueue) this.#offers++;
    try {
      publishBody(
        nc,
        target === undefined ? this.subjects.execute : this.subjects.instance(target).execute,
        body,
        { reply: `${this.#inbox}.${call.token}` },
      );
    } catch (error) {
      this.#finish(
        call,
        answerOf(this.#notConnected(`could not send the request: ${(error as Error).message}`)),
      );
      return;
    }
    call.timer = setTimeout(() => {
      this.#unacknowledged(call).catch((error) => this.#bug("with an unacknowledged offer", error));
    }, ACK_TIMEOUT_MS);
  }

  #onReply(msg: Msg): void {
    const call = this.#calls.get(msg.subject.slice(this.#inbox.length + 1));
    if (isNoResponders(msg)) {
      if (call?.phase !== "offered") return;
      // Sent by name, to an instance no longer subscribed: it is gone.
      if (call.directed) this.#directory.forget(call.candidates[0], "left NATS");
      else {
        // No member in the queue group, though some instance said it had room: is it gone?
        for (const known of this.#directory.values()) {
          if (known.freeSlots > 0) this.#checkGone(known.id);
        }
      }
      this.#notTaken(call, "no_responders", "");
      return;
    }
    const body = this.#reader.take(msg);
    if (body === undefined) return;
    let reply: Reply;
    try {
      reply = parseReply(body);
    } catch (error) {
      this.#log.warn("an instance's answer broke the NATS contract: {error}", {
        error: String(error),
      });
      if (call !== undefined && call.phase !== "waiting") {
        this.#finish(call, answers.brokenAnswer(call.instanceId, (error as Error).message));
      }
      return;
    }
    if (call === undefined || call.phase === "done" || call.phase === "waiting") {
      if (reply.kind === "result" || reply.kind === "error") {
        this.#counters.late_replies++;
        this.#log.info("dropped an answer that came after its request was answered ({token})", {
          token: msg.subject,
        });
      }
      return;
    }
    switch (reply.kind) {
      case "accepted":
        if (call.phase === "offered") this.#accepted(call, reply.instance_id);
        return;
      case "declined":
        if (call.phase !== "offered") return;
        this.#counters.declined++;
        this.#notTaken(call, "declined", reply.reason, reply.instance_id);
        return;
      case "output":
        call.task.onOutput?.({ stream: reply.stream, text: reply.text });
        return;
      case "result": {
        const instanceId = reply.result.instance_id ?? call.instanceId;
        const sessionId = call.task.params.session_id;
        if (sessionId !== undefined && instanceId !== undefined) {
          this.sessions.touch(sessionId, instanceId, call.task.params.tenant);
        }
        this.#finish(call, { result: { ...reply.result, instance_id: instanceId } });
        return;
      }
      case "error": {
        const { code, message, data } = reply.error;
        const sessionId = call.task.params.session_id;
        if (code === ErrorCode.SessionNotFound && sessionId !== undefined) {
          // The instance told the client: the id names a new session from now on.
          this.sessions.lose([sessionId], call.instanceId ?? call.pinnedTo ?? "", message);
          this.sessions.reported(sessionId);
        }
        this.#finish(call, answerOf(new RpcError(code, message, data)));
        return;
      }
    }
  }

  /** The offer is over (accepted, refused, unanswered, or the request answered meanwhile). */
  #endOffer(call: RemoteCall): void {
    clearTimeout(call.timer);
    if (call.phase !== "offered") return;
    if (call.viaQueue) {
      this.#offers--;
      const sessionId = call.task.params.session_id;
      if (sessionId !== undefined) this.#pins.settled(sessionId);
    }
    call.viaQueue = false;
  }

  #accepted(call: RemoteCall, instanceId: string): void {
    const { viaQueue, directed } = call;
    const sessionId = call.task.params.session_id;
    // Pinned first, so that the session's requests waiting for it go there.
    if (sessionId !== undefined) {
      this.sessions.touch(sessionId, instanceId, call.task.params.tenant);
    }
    this.#endOffer(call);
    this.#queue.delete(call);
    call.phase = "running";
    call.instanceId = instanceId;
    call.acceptedAt = performance.now();
    call.task.start();
    this.stats.wait.recordMs(call.acceptedAt - call.task.arrivedAt);
    this.#liveness?.watch(instanceId);
    const known = this.#directory.get(instanceId);
    if (known !== undefined && viaQueue && !directed) {
      known.freeSlots = Math.max(0, known.freeSlots - 1);
    }
    if (sessionId !== undefined && viaQueue) this.#pump();
    if (call.cancelRequested) this.#sendCancel(call);
    // The instance answers by the deadline it was sent; this is the gateway's last resort.
    const remainingMs = call.task.timeoutMs - (call.acceptedAt - call.task.arrivedAt);
    const graceMs = this.config.timeoutGrace * 1000 + DEADLINE_GRACE_MS;
    call.timer = setTimeout(() => this.#overdue(call), Math.max(1, remainingMs) + graceMs);
  }

  /** The request provably did not start: NATS found no instance, or the instance declined. */
  #notTaken(
    call: RemoteCall,
    how: "no_responders" | "declined" | "lost",
    reason: string,
    instanceId?: string,
  ): void {
    this.#endOffer(call);
    if (how === "no_responders") this.#counters.no_responders++;
    const { params } = call.task;
    const pinned = call.pinnedTo;
    if (pinned !== undefined && params.session_id !== undefined && how !== "lost") {
      // The session's instance is gone, or leaving: the session is lost with it.
      const why = `was lost with instance ${pinned}, which ${
        how === "declined" ? `declined it (${reason})` : "is no longer connected to NATS"
      }`;
      this.sessions.lose([params.session_id], pinned, why);
      this.sessions.reported(params.session_id);
      this.#finish(call, answers.sessionLost(params.session_id, pinned, why));
      return;
    }
    if (call.cancelRequested) {
      this.#finish(call, answers.cancelledBeforeRun(call.clientId));
      return;
    }
    if (call.expired) {
      this.#finish(call, { result: answers.neverRan(call.task.timeoutMs) });
      return;
    }
    if (this.#directory.size === 0) {
      this.#finish(call, answerOf(this.#noInstances()));
      return;
    }
    this.#log.debug("request {id} was not taken ({how}{instance}); it waits", {
      id: call.requestId,
      how,
      instance: instanceId ? ` by ${instanceId}` : "",
    });
    this.#wait(call);
    if (how !== "no_responders") this.#pump();
  }

  /**
   * No instance acknowledged an offer in time (NATS was away, or the instance it went to died
   * first). Every instance is asked whether it has the request: one that has it runs it (and
   * one that finished it sends the answer again); when every instance that could have had it
   * says it does not, they all refuse it from then on, and it is offered again. Otherwise its
   * fate is unknown, and it is answered -32001, not sent again.
   */
  async #unacknowledged(call: RemoteCall): Promise<void> {
    if (call.phase !== "offered") return;
    const nc = this.#nc;
    if (nc !== undefined && this.#connected) {
      const offer = call.attempt;
      const answers = await lookupRequest(this.#asker(nc), call.requestId);
      if (call.phase !== "offered" || call.attempt !== offer) return;
      const holder = answers.find((a) =>
        a.running.includes(call.requestId) || a.finished.includes(call.requestId)
      );
      if (holder !== undefined) {
        this.#log.info("request {id} was not acknowledged, but instance {instance} has it", {
          id: call.requestId,
          instance: holder.instance_id,
        });
        this.#accepted(call, holder.instance_id);
        return;
      }
      const answered = new Set(answers.map((a) => a.instance_id));
      if (call.candidates.every((id) => answered.has(id))) {
        this.#log.info("request {id} reached no instance; it is offered again", {
          id: call.requestId,
        });
        this.#notTaken(call, "lost", "it reached no instance");
        return;
      }
    }
    this.#endOffer(call);
    this.#finish(call, answers.unacknowledged(call.pinnedTo, ACK_TIMEOUT_MS));
    this.#pump();
  }

  /** The instance running it stayed silent past every deadline: answered, and cancelled there. */
  #overdue(call: RemoteCall): void {
    if (call.phase !== "running") return;
    this.#sendCancel(call);
    const result = answers.overdue(
      call.instanceId!,
      call.task.timeoutMs,
      this.config.timeoutGrace,
      DEADLINE_GRACE_MS,
      performance.now() - call.acceptedAt,
    );
    this.#finish(call, { result });
  }

  /** The queue deadline passed: a request that never started is answered `timeout`. */
  #expire(call: RemoteCall): void {
    if (call.phase === "waiting") {
      this.#finish(call, { result: answers.neverRan(call.task.timeoutMs) });
    } else if (call.phase === "offered") call.expired = true;
  }

  /** Answers the request (once) and forgets it. */
  #finish(call: RemoteCall, answer: Answer): void {
    this.#endOffer(call);
    const previous = call.phase;
    if (previous === "done") return;
    call.phase = "done";
    this.#calls.remove(call);
    this.#queue.delete(call);
    if (previous === "running") {
      this.stats.run.recordMs(performance.now() - call.acceptedAt);
      this.#liveness?.unwatch(call.instanceId!);
    }
    call.task.finish(answer);
  }

  #sendCancel(call: RemoteCall): void {
    const nc = this.#nc;
    if (nc === undefined || call.instanceId === undefined || nc.isClosed()) return;
    try {
      nc.publish(
        this.subjects.instance(call.instanceId).cancel,
        encode({ request_id: call.requestId }),
      );
    } catch (error) {
      this.#log.warn("could not send a cancel: {error}", { error: String(error) });
    }
  }

  // -------------------------------------------------------------------------------------------
  // Instances and the connection.
  // -------------------------------------------------------------------------------------------

  /** Liveness gave up on an instance: what it ran is lost, and not run again. */
  #instanceDead(id: string, why: string, stalled: boolean): void {
    const lost = this.#calls.inPhase("running").filter((c) => c.instanceId === id);
    if (lost.length > 0) this.#counters.instances_lost++;
    this.#log.warn("instance {id} {why}: {count} requests running there get -32001", {
      id,
      why,
      count: lost.length,
    });
    for (const call of lost) this.#finish(call, answers.instanceLost(id, why));
    if (stalled) this.#directory.suspect(id);
    this.#directory.forget(id, why);
  }

  /** An instance left or went silent: its sessions are lost; with none left, nothing waits. */
  #instanceGone(id: string, why: string, silent: boolean): void {
    this.#log.info("instance {id} {why}", { id, why });
    if (silent) {
      // Gone, or stalled? Suspected at once: until the ping below says, a queue-group offer may
      // go to a stalled instance's subscriptions, and since it is no longer a candidate, the
      // lookup of that offer would not wait for it, and the request would run twice. One that
      // exited has no subscriptions left: NATS says so at once.
      this.#directory.suspect(id);
      this.#checkGone(id);
    }
    this.sessions.loseWorker(id, `was lost with instance ${id}, which ${why}`);
    if (this.#directory.size === 0) this.#failWaiting(this.#noInstances());
  }

  /**
   * Asks NATS whether an instance still holds subscriptions, by pinging it: "no responders"
   * means it exited or NATS dropped it. A suspect is then cleared; an instance the directory
   * still lists (it said it had room, yet the queue group had no member) is forgotten, so that
   * with none left requests get -32000 at once rather than after its heartbeats' silence. An
   * answer, or silence, changes nothing. Right after the gateway reconnects "no responders" may
   * only mean that the instance has not reconnected yet: nothing is asked then.
   */
  #checkGone(id: string): void {
    const nc = this.#nc;
    const now = performance.now();
    if (
      nc === undefined || !this.#connected || this.#checking.has(id) ||
      now - this.#reconnectedAt < RECONNECT_GRACE_MS
    ) return;
    this.#checking.add(id);
    unsubscribed(this.#asker(nc), id).then((gone) => {
      this.#checking.delete(id);
      if (!gone || !this.#connected) return;
      this.#directory.clear(id);
      this.#directory.forget(
        id,
        "left NATS: nothing subscribes to its subjects any more (it exited, or lost its connection)",
      );
    });
  }

  #disconnected(): void {
    this.#connected = false;
    this.#directory.pause();
    // They never ran: answered now, rather than when NATS is back.
    this.#failWaiting(this.#notConnected("lost the NATS server; reconnecting"));
  }

  async #reconnected(): Promise<void> {
    const nc = this.#nc;
    if (nc === undefined) return;
    this.#connected = true;
    this.#reconnectedAt = performance.now();
    this.#directory.resume();
    nc.publish(this.subjects.discover);
    // Answers sent while NATS was away are lost: each instance sends its own again.
    const byInstance = new Map<string, RemoteCall[]>();
    for (const call of this.#calls.inPhase("running")) {
      byInstance.set(call.instanceId!, [...(byInstance.get(call.instanceId!) ?? []), call]);
    }
    await Promise.all([...byInstance].map(([id, calls]) => this.#resend(nc, id, calls)));
  }

  async #resend(nc: NatsConnection, id: string, calls: RemoteCall[]): Promise<void> {
    const unknown = await askResend(
      this.#asker(nc),
      id,
      calls.map((c) => c.requestId),
      () => this.#connected,
    );
    // Liveness decides about an instance that does not answer.
    if (unknown === undefined) return;
    for (const call of calls) {
      if (!unknown.includes(call.requestId) || call.phase !== "running") continue;
      this.#finish(call, answers.lostInOutage(id));
    }
  }

  /** Each instance's report, asked of all at once. */
  async #fetchAll<T>(what: "health" | "stats"): Promise<Fetched<T>[]> {
    await this.#ready;
    const nc = this.#nc;
    const ids = [...this.#directory.values()].map((i) => i.id);
    const asker = nc === undefined || !this.#connected ? undefined : this.#asker(nc);
    return await fetchReports<T>(asker, ids, what);
  }

  #asker(nc: NatsConnection): Asker {
    return { nc, subjects: this.subjects, log: this.#log };
  }

  /** Answers every request that has not been offered yet, or was refused and waits. */
  #failWaiting(error: RpcError): void {
    for (const call of this.#calls.inPhase("waiting")) this.#finish(call, answerOf(error));
  }

  #waitingCount(): number {
    let count = 0;
    for (const call of this.#queue) if (call.phase === "waiting") count++;
    return count;
  }

  #bug(when: string, error: unknown): void {
    this.#log.error("unexpected error {when}: {error}", { when, error: String(error) });
  }

  #noInstances(): RpcError {
    return answers.noInstances(this.config.natsService);
  }

  #notConnected(why: string): RpcError {
    return answers.notConnected(why, this.config.natsService, redactedUrls(this.config.nats));
  }
}
