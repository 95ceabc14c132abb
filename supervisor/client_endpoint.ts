/**
 * Where a client's request enters: the supervisor's own stdin/stdout, served as JSON-RPC 2.0.
 * `execute` goes to the pool; `health`, `stats` and `packages` are answered here; `shutdown` starts a
 * graceful stop when the configuration allows it; `$/cancelRequest` cancels queued work.
 *
 * @module
 */

import type { Config } from "./config.ts";
import { ErrorCode, invalidParams, RpcError } from "../lib/errors.ts";
import { logger } from "../lib/logging.ts";
import { type JsonRpcId, parseExecuteParams } from "../lib/protocol.ts";
import { RpcServer } from "../lib/rpc_server.ts";
import { ANSWER_LIMIT_HINT } from "./failures.ts";
import type { PoolApi } from "./pool_api.ts";
import { healthFor } from "./reports.ts";

export interface ClientEndpointOptions {
  config: Config;
  /** The local pool, or the NATS gateway. */
  pool: PoolApi;
  /** Called when a client asks the pool to shut down. */
  requestShutdown: (reason: string) => void;
  /** Sends a notification to the client (streamed output). */
  notify: (method: string, params: Record<string, unknown>) => void;
  /**
   * The tenant every `execute` of this client runs for (an HTTP token's name): a request may
   * leave `tenant` out or name this one. Unset: the request says.
   */
  tenant?: string;
  /**
   * The key the pool knows a request by, to cancel it (default: its JSON-RPC id). Clients that
   * share the pool through one endpoint (HTTP) need keys unique across them, since their ids
   * are not.
   */
  requestKey?: (id: JsonRpcId) => unknown;
  /** Aborted when the client went away: its requests still queued or running are cancelled. */
  signal?: AbortSignal;
}

const log = logger("client");

/** A request whose client went away before it was sent to the pool. */
function cancelledError(id: JsonRpcId): RpcError {
  return new RpcError(ErrorCode.Cancelled, "cancelled: the client went away before it ran", {
    id,
  });
}

/** Builds the JSON-RPC server that faces the client. */
export function createClientServer(
  { config, pool, requestShutdown, notify, tenant, requestKey, signal }: ClientEndpointOptions,
): RpcServer {
  let shuttingDown = false;
  let pausedBefore = false;
  const keyOf = requestKey ?? ((id: JsonRpcId) => id);
  // The keys of the requests in the pool's hands, each with how many (a batch may repeat an id),
  // cancelled when the client goes: one listener for all, since a listener each costs a batch of
  // n requests n^2 (an AbortSignal checks a new listener against those it has).
  const pending = new Map<unknown, number>();
  signal?.addEventListener("abort", () => {
    for (const [key, count] of pending) for (let i = 0; i < count; i++) pool.cancel(key);
  }, { once: true });
  return new RpcServer({
    execute: async (params, { id }) => {
      let request = parseExecuteParams(params);
      if (tenant !== undefined) {
        if (request.tenant !== undefined && request.tenant !== tenant) {
          throw invalidParams("tenant", `must be "${tenant}" (or left out): the token names it`);
        }
        request = { ...request, tenant };
      }
      // Output notifications carry the client's own request id, and precede the result.
      const onOutput = request.stream
        ? ({ stream, text }: { stream: string; text: string }) =>
          notify("output", { id, stream, text })
        : undefined;
      const key = keyOf(id);
      if (signal === undefined) return await pool.execute(request, key, onOutput);
      if (signal.aborted) throw cancelledError(id);
      pending.set(key, (pending.get(key) ?? 0) + 1);
      try {
        return await pool.execute(request, key, onOutput);
      } finally {
        const left = pending.get(key)! - 1;
        if (left === 0) pending.delete(key);
        else pending.set(key, left);
      }
    },
    packages: () => pool.packagesReport(),
    health: async () => healthFor(await pool.health(), tenant, pool),
    stats: () => pool.statsReport(),
    shutdown: () => {
      if (!config.allowShutdown) {
        throw new RpcError(ErrorCode.MethodNotFound, "Method not found: shutdown is disabled", {
          method: "shutdown",
          hint: "start the pool with --allow-shutdown (PYODIDE_ALLOW_SHUTDOWN=true) to enable it",
        });
      }
      // A tenant's token reaches a pool that other tenants share: stopping it is not its call.
      if (tenant !== undefined) {
        throw new RpcError(
          ErrorCode.MethodNotFound,
          "Method not found: shutdown is not for a tenant's token",
          {
            method: "shutdown",
            tenant,
            hint: "stop the pool with SIGTERM, or call shutdown with an unnamed token or on stdio",
          },
        );
      }
      if (!shuttingDown) {
        shuttingDown = true;
        // After this response is written: the stop answers everything still pending.
        setTimeout(() => requestShutdown("shutdown method"));
      }
      return { stopping: true };
    },
  }, {
    maxLineBytes: config.maxLineBytes,
    // One limit both ways: an answer the pool would refuse to take back (a session's state,
    // sent again with the next request) is not sent.
    maxAnswerBytes: config.maxLineBytes,
    answerLimitHint: ANSWER_LIMIT_HINT,
    // JSON text is mostly ASCII: a character is about a byte.
    maxUnwrittenChars: config.maxUnreadMb * 1e6,
    onReadingPaused: (unwrittenChars) => {
      // A client that reads slowly pauses the reading again and again: one warning is enough.
      log[pausedBefore ? "debug" : "warn"](
        "the client is not reading its answers ({mb} MB wait): no more requests are read until they are written",
        { mb: (unwrittenChars / 1e6).toFixed(1) },
      );
      pausedBefore = true;
    },
    onNotification: (method, params) => {
      if (method !== "$/cancelRequest") {
        log.debug("ignored notification {method}", { method });
        return;
      }
      const id = (params as { id?: unknown } | undefined)?.id;
      if (typeof id !== "string" && typeof id !== "number") {
        // Notifications get no response, so a bad one can only be logged.
        log.warn("ignored $/cancelRequest: {error}", {
          error: invalidParams("id", "must be a string or a number").message,
        });
        return;
      }
      if (!pool.cancel(keyOf(id))) {
        log.debug("$/cancelRequest {id}: nothing queued with that id", { id });
      }
    },
    onUnexpectedError: (method, error) =>
      log.error("unexpected error in {method}: {error}", { method, error: String(error) }),
  });
}
