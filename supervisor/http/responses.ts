/**
 * The HTTP service's answers that are not JSON-RPC results: every refusal (401, 404, 413, ...)
 * carries a JSON-RPC error response with a null id, so that a JSON-RPC client reads it like any
 * other error: a code, a message a person understands, and data to act on. The status codes are
 * listed in docs/protocol.md ("Over HTTP").
 *
 * @module
 */

import { ErrorCode, type ErrorData, RpcError } from "../../lib/errors.ts";
import { errorResponse } from "../../lib/protocol.ts";

/** A JSON body with the status given. */
export function jsonResponse(body: string, status: number, headers: HeadersInit = {}): Response {
  return new Response(body, {
    status,
    headers: { "content-type": "application/json", ...headers },
  });
}

/** A refusal: `status`, and a JSON-RPC error as the body. */
export function refusal(status: number, error: RpcError, headers: HeadersInit = {}): Response {
  return jsonResponse(JSON.stringify(errorResponse(null, error)), status, headers);
}

/** A request the HTTP service cannot take as it is (-32600), with what is wrong in `data`. */
export function badRequest(
  status: number,
  problem: string,
  data: ErrorData = {},
  headers: HeadersInit = {},
): Response {
  return refusal(
    status,
    new RpcError(ErrorCode.InvalidRequest, `Invalid Request: ${problem}`, { problem, ...data }),
    headers,
  );
}

/** 401: no token, or not one of the tokens. The token itself is never echoed or logged. */
export function unauthorized(): Response {
  return badRequest(401, "a valid bearer token is needed", {
    hint: "send the header Authorization: Bearer <token>, with a token from the pool's " +
      "--http-token-file",
  }, { "www-authenticate": 'Bearer realm="pyodide-pool"' });
}

/** The whole HTTP response the gate writes to a connection past `--http-max-connections`. */
export function overCapacityText(open: number, max: number): string {
  const body = JSON.stringify(errorResponse(
    null,
    new RpcError(ErrorCode.Overloaded, "overloaded: too many HTTP connections; retry later", {
      connections: open,
      max_connections: max,
    }),
  ));
  return rawResponse(503, "Service Unavailable", body, "retry-after: 1\r\n");
}

/** The whole HTTP response the gate writes to a connection too slow to send its headers. */
export function headerTimeoutText(timeoutMs: number): string {
  const body = JSON.stringify(errorResponse(
    null,
    new RpcError(ErrorCode.InvalidRequest, "Invalid Request: the request headers came too slowly", {
      problem: "header timeout",
      timeout_ms: timeoutMs,
    }),
  ));
  return rawResponse(408, "Request Timeout", body, "");
}

function rawResponse(status: number, reason: string, body: string, extra: string): string {
  return `HTTP/1.1 ${status} ${reason}\r\ncontent-type: application/json\r\n${extra}` +
    `connection: close\r\ncontent-length: ${new TextEncoder().encode(body).length}\r\n\r\n${body}`;
}
