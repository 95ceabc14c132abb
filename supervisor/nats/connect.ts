/**
 * The NATS connection of an instance or a gateway, made from the settings (--nats,
 * --nats-creds, --nats-token, --nats-ca): it retries until the server is there, reconnects
 * for ever, and says on stderr when it goes and comes back.
 *
 * @module
 */

import {
  connect,
  credsAuthenticator,
  type NatsConnection,
  type NodeConnectionOptions,
} from "@nats-io/transport-node";
import { type Config, redactedUrls } from "../config.ts";
import { logger } from "../../lib/logging.ts";

const log = logger("nats");

/** How the client reconnects: quickly, since requests fail while it is away. */
const RECONNECT_WAIT_MS = 250;

/**
 * The client's options for `config`: every URL, the credentials, TLS when a URL asks for it or
 * a CA is given.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { loadConfig } from "../config.ts";
 * import { connectionOptions } from "./connect.ts";
 * const loaded = loadConfig(["--nats", "tls://nats.example:4222"], {});
 * assert.ok("config" in loaded);
 * const options = connectionOptions(loaded.config, "pyodide-pool instance");
 * assert.deepEqual(options.servers, ["tls://nats.example:4222"]);
 * assert.deepEqual(options.tls, {});
 * ```
 */
export function connectionOptions(config: Config, name: string): NodeConnectionOptions {
  const tlsWanted = config.nats.some((url) => url.startsWith("tls://")) ||
    config.natsCa !== undefined;
  const { servers, user, pass, token } = credentialsInUrls(config.nats);
  return {
    servers,
    ...(user !== undefined ? { user, pass } : {}),
    ...(token !== undefined ? { token } : {}),
    name,
    maxReconnectAttempts: -1,
    reconnectTimeWait: RECONNECT_WAIT_MS,
    reconnectJitter: 100,
    waitOnFirstConnect: true,
    ...(config.natsToken !== undefined ? { token: config.natsToken } : {}),
    ...(config.natsCreds !== undefined
      ? { authenticator: credsAuthenticator(Deno.readFileSync(config.natsCreds)) }
      : {}),
    ...(tlsWanted ? { tls: config.natsCa !== undefined ? { caFile: config.natsCa } : {} } : {}),
  };
}

/**
 * The URLs without their credentials, and those credentials (the first URL's that has some):
 * `nats://user:pass@host` gives a user and password, `nats://token@host` a token, as NATS's
 * other clients read them.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { credentialsInUrls } from "./connect.ts";
 * assert.deepEqual(credentialsInUrls(["nats://me:secret@a:4222", "b:4222"]), {
 *   servers: ["nats://a:4222", "b:4222"],
 *   user: "me",
 *   pass: "secret",
 *   token: undefined,
 * });
 * ```
 */
export function credentialsInUrls(urls: string[]): {
  servers: string[];
  user?: string;
  pass?: string;
  token?: string;
} {
  let user: string | undefined;
  let pass: string | undefined;
  let token: string | undefined;
  const servers = urls.map((url) => {
    if (!url.includes("://")) return url;
    const parsed = new URL(url);
    if (parsed.username === "") return url;
    if (user === undefined && token === undefined) {
      if (parsed.password === "") token = decodeURIComponent(parsed.username);
      else {
        user = decodeURIComponent(parsed.username);
        pass = decodeURIComponent(parsed.password);
      }
    }
    return `${parsed.protocol}//${parsed.host}`;
  });
  return { servers, user, pass, token };
}

/** Connects, retrying until a server answers; logs each disconnect and reconnect. */
export async function connectNats(config: Config, name: string): Promise<NatsConnection> {
  const slow = setTimeout(() => {
    log.warn("waiting for a NATS server at {servers}", {
      servers: redactedUrls(config.nats).join(", "),
    });
  }, 2000);
  let nc: NatsConnection;
  try {
    nc = await connect(connectionOptions(config, name));
  } finally {
    clearTimeout(slow);
  }
  log.info("connected to NATS at {server} (max_payload {max} bytes)", {
    server: nc.getServer(),
    max: nc.info?.max_payload,
  });
  return nc;
}

/** Connection events, as instance.ts and gateway.ts react to them. */
export interface ConnectionEvents {
  disconnected?: () => void;
  reconnected?: () => void;
  /** The connection closed for good (after drain, or an error it cannot recover from). */
  closed?: (error: Error | undefined) => void;
}

/** Watches `nc`'s status until it closes: logs, and calls `events`. */
export function watchConnection(nc: NatsConnection, events: ConnectionEvents): void {
  (async () => {
    for await (const status of nc.status()) {
      switch (status.type) {
        case "disconnect":
          log.warn("lost the NATS server {server}; reconnecting", { server: status.server });
          events.disconnected?.();
          break;
        case "reconnect":
          log.info("reconnected to NATS at {server}", { server: status.server });
          events.reconnected?.();
          break;
        case "error":
          log.warn("NATS: {error}", { error: String(status.error) });
          break;
        case "slowConsumer":
          log.warn("NATS: a subscription is too slow ({pending} messages pending)", {
            pending: status.pending,
          });
          break;
      }
    }
  })();
  nc.closed().then((error) => {
    if (error) log.error("the NATS connection closed: {error}", { error: String(error) });
    events.closed?.(error ?? undefined);
  });
}
