/**
 * The NATS services protocol (ADR-32, "micro"): `$SRV.PING`, `$SRV.INFO` and `$SRV.STATS`,
 * each on its own, per service name and per instance id, so that NATS's own tools (`nats micro
 * ls`, `nats micro stats pyodide_pool`) find and watch the instances. Written on the plain
 * client: `@nats-io/services` exists only as a prerelease, typed against another prerelease of
 * the client, and its endpoints are fixed subscriptions, where an instance's queue-group
 * subscriptions come and go with its idle workers (instance.ts).
 *
 * @module
 */

import type { Msg, NatsConnection } from "@nats-io/transport-node";
import packageJson from "../../package.json" with { type: "json" };
import { encode } from "./subjects.ts";

/** What a service says of itself. */
export interface ServiceIdentity {
  name: string;
  id: string;
  description: string;
  metadata: Record<string, string>;
}

/** One endpoint in `$SRV.INFO`. */
export interface EndpointInfo {
  name: string;
  subject: string;
  queue_group?: string;
  metadata: Record<string, string> | null;
}

/** One endpoint in `$SRV.STATS`; times in nanoseconds, as ADR-32 has them. */
export interface EndpointStats {
  name: string;
  subject: string;
  queue_group?: string;
  num_requests: number;
  num_errors: number;
  last_error: string;
  processing_time: number;
  average_processing_time: number;
}

/** The `type` of each answer, as ADR-32 names them. */
export const RESPONSE_TYPES = {
  PING: "io.nats.micro.v1.ping_response",
  INFO: "io.nats.micro.v1.info_response",
  STATS: "io.nats.micro.v1.stats_response",
} as const;

/** The service's version, a semantic version as ADR-32 requires: the package's. */
export const SERVICE_VERSION = packageJson.version;

/**
 * The `$SRV` subjects one instance answers on: the verb alone, with the service's name, and
 * with its name and id.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { discoverySubjects } from "./service_protocol.ts";
 * assert.deepEqual(discoverySubjects("PING", "pyodide_pool", "i1"), [
 *   "$SRV.PING",
 *   "$SRV.PING.pyodide_pool",
 *   "$SRV.PING.pyodide_pool.i1",
 * ]);
 * ```
 */
export function discoverySubjects(verb: keyof typeof RESPONSE_TYPES, name: string, id: string) {
  return [`$SRV.${verb}`, `$SRV.${verb}.${name}`, `$SRV.${verb}.${name}.${id}`];
}

/** The endpoints of one instance, their counts, and the `$SRV` answers made of them. */
export class ServiceEndpoints {
  readonly started = new Date();
  #endpoints = new Map<string, EndpointStats>();

  constructor(private readonly nc: NatsConnection, readonly identity: ServiceIdentity) {}

  /** Declares an endpoint (what `$SRV.INFO` lists). */
  add(name: string, subject: string, queueGroup?: string): void {
    this.#endpoints.set(name, {
      name,
      subject,
      ...(queueGroup === undefined ? {} : { queue_group: queueGroup }),
      num_requests: 0,
      num_errors: 0,
      last_error: "",
      processing_time: 0,
      average_processing_time: 0,
    });
  }

  /** Counts one request an endpoint served, in `ms`; `error` if it was answered an error. */
  record(name: string, ms: number, error?: string): void {
    const endpoint = this.#endpoints.get(name);
    if (endpoint === undefined) return;
    endpoint.num_requests++;
    endpoint.processing_time += Math.round(ms * 1e6);
    endpoint.average_processing_time = Math.round(
      endpoint.processing_time / endpoint.num_requests,
    );
    if (error !== undefined) {
      endpoint.num_errors++;
      endpoint.last_error = error;
    }
  }

  /** Answers `$SRV.PING`, `$SRV.INFO` and `$SRV.STATS` from now on. */
  start(): void {
    const { name, id } = this.identity;
    for (const verb of ["PING", "INFO", "STATS"] as const) {
      for (const subject of discoverySubjects(verb, name, id)) {
        this.nc.subscribe(subject, { callback: (_, msg) => this.#answer(verb, msg) });
      }
    }
  }

  /** The answer to `verb`, as ADR-32 shapes it. */
  answer(verb: keyof typeof RESPONSE_TYPES): Record<string, unknown> {
    const { name, id, description, metadata } = this.identity;
    const base = { type: RESPONSE_TYPES[verb], name, id, version: SERVICE_VERSION, metadata };
    const endpoints = [...this.#endpoints.values()];
    switch (verb) {
      case "PING":
        return base;
      case "INFO":
        return {
          ...base,
          description,
          endpoints: endpoints.map(({ name, subject, queue_group }): EndpointInfo => ({
            name,
            subject,
            ...(queue_group === undefined ? {} : { queue_group }),
            metadata: null,
          })),
        };
      case "STATS":
        return {
          ...base,
          started: this.started.toISOString(),
          endpoints: endpoints.map((endpoint) => ({ ...endpoint })),
        };
    }
  }

  #answer(verb: keyof typeof RESPONSE_TYPES, msg: Msg): void {
    if (!msg.reply) return;
    try {
      msg.respond(encode(this.answer(verb)));
    } catch {
      // Closed: there is no one to answer.
    }
  }
}
