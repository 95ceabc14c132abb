/**
 * One NATS request with one answer, its outcome as a value rather than an exception: the
 * answer, "no responders" (nothing subscribes to the subject), no answer in time, or another
 * failure (the connection is closed or away).
 *
 * @module
 */

import { errors, type Msg, type NatsConnection } from "@nats-io/transport-node";

export type Asked =
  | { kind: "answer"; msg: Msg }
  | { kind: "no_responders" }
  | { kind: "timeout" }
  | { kind: "failed"; error: Error };

export async function ask(
  nc: NatsConnection,
  subject: string,
  body: Uint8Array,
  timeoutMs: number,
): Promise<Asked> {
  try {
    return { kind: "answer", msg: await nc.request(subject, body, { timeout: timeoutMs }) };
  } catch (error) {
    if (error instanceof errors.RequestError && error.isNoResponders()) {
      return { kind: "no_responders" };
    }
    if (error instanceof errors.TimeoutError) return { kind: "timeout" };
    return { kind: "failed", error: error as Error };
  }
}
