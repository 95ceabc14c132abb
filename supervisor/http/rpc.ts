/**
 * `POST /rpc`: one JSON-RPC request or a batch, served by the same `createClientServer` as the
 * supervisor's stdin (client_endpoint.ts), one server per HTTP request: its notifications go to
 * that request's answer, its ids are its own (the pool knows each request by a key unique to
 * the HTTP request), and its token's tenant is fixed.
 *
 * - The answer is JSON; with `Accept: text/event-stream` it is a stream of server-sent events,
 *   the `output` notifications first, then the answer (sse.ts).
 * - A client that goes away cancels its requests still queued or running.
 * - An answer that is only `-32000` (the queue is full) is a 503 with `Retry-After`.
 * - Only notifications: 204.
 *
 * @module
 */

import { ErrorCode, toRpcError } from "../../lib/errors.ts";
import { logger } from "../../lib/logging.ts";
import { errorResponse, notificationMessage, type ResponseMessage } from "../../lib/protocol.ts";
import { type ClientEndpointOptions, createClientServer } from "../client_endpoint.ts";
import type { Caller } from "./auth.ts";
import { type BodyBudget, readBody } from "./body.ts";
import type { GatedConnection } from "./connections.ts";
import { badRequest, jsonResponse } from "./responses.ts";
import { EventStream } from "./sse.ts";

export interface RpcRouteOptions {
  endpoint: Omit<ClientEndpointOptions, "notify" | "tenant" | "requestKey" | "signal">;
  budget: BodyBudget;
  bodyTimeoutMs: number;
}

const log = logger("http");

/** Seconds a client told the queue is full should wait before it tries again. */
const RETRY_AFTER_S = 1;

let exchanges = 0;

/** The answer has not come yet, but output has: the events stream. */
const STREAMING: unique symbol = Symbol("streaming");

/** Serves one `POST /rpc`. */
export async function serveRpc(
  request: Request,
  caller: Caller,
  connection: GatedConnection,
  options: RpcRouteOptions,
): Promise<Response> {
  if (!isJson(request.headers.get("content-type"))) {
    // Also what keeps a web page of another site from posting here without CORS's preflight.
    return badRequest(415, "the body must be JSON (Content-Type: application/json)", {
      content_type: request.headers.get("content-type"),
    });
  }
  const body = await readBody(request, {
    maxBytes: options.endpoint.config.maxLineBytes,
    timeoutMs: options.bodyTimeoutMs,
  }, options.budget);
  if ("refused" in body) {
    // The rest of a body refused must not be read as the next request.
    connection.closeAfterAnswer();
    body.refused.headers.set("connection", "close");
    return body.refused;
  }
  const scope = `http-${++exchanges}:`;
  const gone = new AbortController();
  const streaming = accepts(request.headers.get("accept"), "text/event-stream");
  const events = streaming ? new EventStream(() => gone.abort()) : undefined;
  let notified: () => void = () => {};
  const firstNotification = new Promise<void>((resolve) => notified = resolve);
  const server = createClientServer({
    ...options.endpoint,
    tenant: caller.tenant,
    requestKey: (id) => `${scope}${JSON.stringify(id)}`,
    signal: gone.signal,
    notify: events
      ? (method, params) => {
        events.send(JSON.stringify(notificationMessage(method, params)));
        notified();
      }
      : () => {},
  });
  // The gate sees the client go (Request.signal would too, but Deno 2.9 also aborts it after
  // every full answer, and warns about that on stderr).
  const cancel = () => gone.abort();
  connection.gone.addEventListener("abort", cancel, { once: true });
  const done = () => connection.gone.removeEventListener("abort", cancel);
  const answering = server.answer({ kind: "line", text: body.text });
  if (events === undefined) return answerResponse(await answering.finally(done));
  const first = await Promise.race([
    answering,
    firstNotification.then((): typeof STREAMING => STREAMING),
  ]);
  if (first !== STREAMING && (first === undefined || overloaded(first.response))) {
    done();
    events.end();
    return answerResponse(first);
  }
  answering.then((answer) => {
    if (answer !== undefined) events.send(answer.line);
  }, (error) => {
    // The status line went out with the first event: the failure is the stream's last event
    // (a rejection left unhandled here would stop the whole supervisor).
    log.error("HTTP POST /rpc failed while streaming: {error}", { error: String(error) });
    events.send(JSON.stringify(errorResponse(null, toRpcError(error))));
  }).finally(() => {
    done();
    events.end();
  });
  return new Response(events.body, {
    headers: {
      "content-type": "text/event-stream",
      "cache-control": "no-store",
      // Proxies such as nginx would otherwise hold the events back.
      "x-accel-buffering": "no",
    },
  });
}

/** The JSON answer: 200, 503 when the queue was full, 204 for notifications only. */
function answerResponse(
  answer: { line: string; response: ResponseMessage | ResponseMessage[] } | undefined,
): Response {
  if (answer === undefined) return new Response(null, { status: 204 });
  if (overloaded(answer.response)) {
    return jsonResponse(answer.line, 503, { "retry-after": String(RETRY_AFTER_S) });
  }
  return jsonResponse(answer.line, 200);
}

/** Every response is `-32000`: nothing was served, and trying again later may be. */
function overloaded(response: ResponseMessage | ResponseMessage[]): boolean {
  const all = Array.isArray(response) ? response : [response];
  return all.length > 0 && all.every((r) => r.error?.code === ErrorCode.Overloaded);
}

function isJson(contentType: string | null): boolean {
  return /^application\/json\s*(;|$)/i.test(contentType ?? "");
}

/** Whether an Accept header lists `type` (a plain check: no quality values are weighed). */
export function accepts(accept: string | null, type: string): boolean {
  return (accept ?? "").split(",").some((part) => part.split(";")[0].trim() === type);
}
