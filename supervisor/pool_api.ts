/**
 * What the client endpoints (client_endpoint.ts, mcp_endpoint.ts) and main.ts need of a pool:
 * the local `Pool`, or the NATS gateway (nats/gateway.ts), which has no workers and forwards
 * every request to the instances of a service. The endpoints serve either unchanged.
 *
 * @module
 */

import type {
  ExecuteParams,
  ExecuteResult,
  HealthReport,
  PackagesReport,
  StatsReport,
} from "../lib/protocol.ts";
import type { OutputListener } from "./task.ts";

/** The methods a client can call, as the endpoints call them. */
export interface PoolApi {
  /**
   * Runs one request; resolves with its result or rejects with an RpcError. `key` is the
   * client's request id, for `cancel`; `onOutput` receives a streaming request's output, in
   * order, before the answer.
   */
  execute(params: ExecuteParams, key: unknown, onOutput?: OutputListener): Promise<ExecuteResult>;
  /** Cancels a request by its key: queued, it never runs; running, it is interrupted. */
  cancel(key: unknown): boolean;
  health(): HealthReport | Promise<HealthReport>;
  /** Whether the server-held session `id` is `tenant`'s, to show a tenant its own sessions only. */
  ownsSession(id: string, tenant: string): boolean;
  statsReport(): Promise<StatsReport>;
  packagesReport(): PackagesReport | Promise<PackagesReport>;
}

/** A pool that main.ts starts and stops besides serving it. */
export interface ServedPool extends PoolApi {
  /** Starts taking work; resolves once it is ready (or has given up on some of it). */
  start(): Promise<void>;
  /**
   * Stops taking work. Running requests may finish within `graceMs`; queued ones are answered
   * -32002, or with `drainQueue` still run if they can.
   */
  shutdown(graceMs: number, options?: { drainQueue?: boolean }): Promise<void>;
}
