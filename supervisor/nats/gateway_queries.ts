/**
 * What a gateway (gateway.ts) asks the instances of its service, besides offering requests:
 * who has a request (lookup), who holds a session, the answers lost while NATS was away
 * (resend), each instance's reports, whether an instance is still subscribed at all. Each
 * question's NATS round trip and the checking of its answers; what the gateway does with them
 * stays there.
 *
 * @module
 */

import type { NatsConnection } from "@nats-io/transport-node";
import type { Logger } from "@logtape/logtape";
import type { PackagesReport } from "../../lib/protocol.ts";
import type { Fetched } from "./aggregate.ts";
import { ask } from "./ask.ts";
import * as answers from "./gateway_answers.ts";
import { PING_TIMEOUT_MS } from "./liveness.ts";
import {
  encode,
  parseReport,
  parseResendReply,
  parseSessionHolder,
  type ResendReply,
  type ServiceSubjects,
} from "./subjects.ts";
import { isNoResponders } from "./wire.ts";

/** How long the instances' answers to a lookup are gathered. */
const LOOKUP_WAIT_MS = 500;
/** How long the instances' answers to `sessions` are awaited (all known ones answer sooner). */
const SESSION_LOOKUP_MS = 250;
/** How long a report (health, stats, packages) or a resend may take an instance. */
const REPORT_TIMEOUT_MS = 2000;

/** The connection and the service's subjects, and where to say what went wrong. */
export interface Asker {
  nc: NatsConnection;
  subjects: ServiceSubjects;
  log: Logger;
}

/** Every instance's answer about one request (`S.lookup`), gathered for LOOKUP_WAIT_MS. */
export async function lookupRequest(
  { nc, subjects, log }: Asker,
  requestId: string,
): Promise<ResendReply[]> {
  const found: ResendReply[] = [];
  try {
    const replies = await nc.requestMany(
      subjects.lookup,
      encode({ request_ids: [requestId] }),
      { maxWait: LOOKUP_WAIT_MS },
    );
    for await (const msg of replies) {
      if (isNoResponders(msg)) break;
      try {
        found.push(parseResendReply(msg.data));
      } catch (error) {
        log.warn("ignored a lookup answer: {error}", { error: String(error) });
      }
    }
  } catch (error) {
    log.warn("could not look request {id} up: {error}", { id: requestId, error: String(error) });
  }
  return found;
}

/**
 * The instance that says it holds the session (`S.sessions`), if one does within
 * SESSION_LOOKUP_MS; the answers of `instances` instances are awaited at most.
 */
export async function sessionHolder(
  { nc, subjects, log }: Asker,
  sessionId: string,
  instances: number,
): Promise<string | undefined> {
  try {
    const replies = await nc.requestMany(
      subjects.sessions,
      encode({ session_id: sessionId }),
      { strategy: "count", maxMessages: Math.max(1, instances), maxWait: SESSION_LOOKUP_MS },
    );
    for await (const msg of replies) {
      if (isNoResponders(msg)) break;
      try {
        const answer = parseSessionHolder(msg.data);
        if (answer.held) return answer.instance_id;
      } catch (error) {
        log.warn("ignored a sessions answer: {error}", { error: String(error) });
      }
    }
  } catch (error) {
    log.warn("could not ask who holds session {id}: {error}", {
      id: sessionId,
      error: String(error),
    });
  }
  return undefined;
}

/**
 * Asks instance `id` to send again the answers to `requestIds` it finished (`resend`), a few
 * times (it may reconnect a moment after the gateway), while `connected()`. Returns the ids it
 * does not know, or undefined without a usable answer.
 */
export async function askResend(
  { nc, subjects, log }: Asker,
  id: string,
  requestIds: string[],
  connected: () => boolean,
): Promise<string[] | undefined> {
  const body = encode({ request_ids: requestIds });
  for (let attempt = 0; attempt < 10; attempt++) {
    const outcome = await ask(nc, subjects.instance(id).resend, body, REPORT_TIMEOUT_MS);
    if (outcome.kind === "answer") {
      try {
        return parseResendReply(outcome.msg.data).unknown;
      } catch (error) {
        log.warn("instance {id}'s resend answer: {error}", { id, error: String(error) });
        return undefined;
      }
    }
    if (!connected()) return undefined;
    await new Promise((resolve) => setTimeout(resolve, 300));
  }
  return undefined;
}

/** Each instance's report, asked of all at once; `asker` undefined: the gateway is cut off. */
export async function fetchReports<T>(
  asker: Omit<Asker, "log"> | undefined,
  ids: string[],
  what: "health" | "stats",
): Promise<Fetched<T>[]> {
  return await Promise.all(ids.map(async (id): Promise<Fetched<T>> => {
    if (asker === undefined) {
      return { instance_id: id, error: "the gateway is not connected to NATS" };
    }
    const subject = asker.subjects.instance(id)[what];
    const outcome = await ask(asker.nc, subject, new Uint8Array(), REPORT_TIMEOUT_MS);
    if (outcome.kind !== "answer") {
      return {
        instance_id: id,
        error: outcome.kind === "no_responders"
          ? "not connected to NATS"
          : outcome.kind === "timeout"
          ? `no answer within ${REPORT_TIMEOUT_MS} ms`
          : outcome.error.message,
      };
    }
    try {
      return { instance_id: id, report: parseReport<T>(outcome.msg.data, what) };
    } catch (error) {
      return { instance_id: id, error: (error as Error).message };
    }
  }));
}

/** Some instance's `packages` report (on the queue group); throws the error to answer. */
export async function askPackages(
  { nc, subjects }: Omit<Asker, "log">,
  service: string,
): Promise<PackagesReport> {
  const outcome = await ask(nc, subjects.packages, new Uint8Array(), REPORT_TIMEOUT_MS);
  if (outcome.kind === "answer") return parseReport<PackagesReport>(outcome.msg.data, "packages");
  if (outcome.kind === "no_responders") throw answers.noInstances(service);
  throw answers.noPackagesAnswer(
    service,
    outcome.kind === "timeout" ? `no answer within ${REPORT_TIMEOUT_MS} ms` : "failed",
  );
}

/** Whether NATS says nothing subscribes to instance `id`'s subjects (its ping's "no responders"). */
export async function unsubscribed(
  { nc, subjects }: Omit<Asker, "log">,
  id: string,
): Promise<boolean> {
  const outcome = await ask(nc, subjects.instance(id).ping, new Uint8Array(), PING_TIMEOUT_MS);
  return outcome.kind === "no_responders";
}
