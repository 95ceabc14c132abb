/**
 * CORS: off unless `--http-cors` names origins. A web page of an allowed origin may then call
 * the routes from a browser (with its token: CORS opens no route that a token guards); any other
 * origin's preflight is refused, and its requests get no CORS headers, so its page cannot read
 * the answers. Same-origin pages (the status page) need none of this.
 *
 * @module
 */

import { badRequest } from "./responses.ts";

const ALLOW_HEADERS = [
  "authorization",
  "content-type",
  "accept",
  "mcp-session-id",
  "mcp-protocol-version",
  "last-event-id",
].join(", ");
const EXPOSE_HEADERS = ["mcp-session-id", "retry-after", "www-authenticate"].join(", ");

/**
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Cors } from "./cors.ts";
 * const cors = new Cors(["https://app.example"]);
 * const asked = (origin: string) =>
 *   new Request("http://pool/rpc", { method: "OPTIONS", headers: { origin } });
 * assert.equal(cors.preflight(asked("https://app.example")).status, 204);
 * assert.equal(cors.preflight(asked("https://evil.example")).status, 403);
 * ```
 */
export class Cors {
  constructor(private readonly origins: readonly string[]) {}

  /** The origin `request` comes from, if it may read answers; what to allow it as. */
  #allowed(request: Request): string | undefined {
    const origin = request.headers.get("origin");
    if (origin === null) return undefined;
    if (this.origins.includes("*")) return "*";
    return this.origins.includes(origin) ? origin : undefined;
  }

  /** Answers an `OPTIONS` preflight: 204 with what the origin may send, or 403. */
  preflight(request: Request): Response {
    const origin = this.#allowed(request);
    if (origin === undefined) {
      return badRequest(403, "cross-origin requests from this origin are not allowed", {
        origin: request.headers.get("origin"),
        hint: "start the pool with --http-cors naming the origin of the page",
      });
    }
    return new Response(null, {
      status: 204,
      headers: {
        "access-control-allow-origin": origin,
        "access-control-allow-methods": "GET, POST, DELETE, OPTIONS",
        "access-control-allow-headers": ALLOW_HEADERS,
        "access-control-max-age": "600",
        vary: "origin",
      },
    });
  }

  /** `response`, with the CORS headers when `request` came from an allowed origin. */
  allow(request: Request, response: Response): Response {
    const origin = this.#allowed(request);
    if (origin === undefined) return response;
    const headers = new Headers(response.headers);
    headers.set("access-control-allow-origin", origin);
    headers.set("access-control-expose-headers", EXPOSE_HEADERS);
    headers.append("vary", "origin");
    return new Response(response.body, { status: response.status, headers });
  }
}
