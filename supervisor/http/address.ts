/**
 * The `--http HOST:PORT` setting: parsed once, at configuration time, with whether the host is a
 * loopback address (a non-loopback bind needs a token file, or `--http-insecure`).
 *
 * @module
 */

/** Where the HTTP service listens. */
export interface ListenAddress {
  /** An IP literal as `Deno.listen` takes it (IPv6 without brackets); `localhost` is 127.0.0.1. */
  hostname: string;
  /** 0: any free port. */
  port: number;
  /** Reachable from this machine only. */
  loopback: boolean;
}

const IPV4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;

/**
 * Parses `HOST:PORT`: an IPv4 address, `[IPv6]` or `localhost`, then a port from 0 to 65535.
 * Throws an Error that says what is wrong; host names other than `localhost` are refused, since
 * a name may resolve to several addresses, and the bind must be the one the operator checked.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseListenAddress } from "./address.ts";
 * assert.deepEqual(parseListenAddress("127.0.0.1:8080"), { hostname: "127.0.0.1", port: 8080, loopback: true });
 * assert.deepEqual(parseListenAddress("[::]:0"), { hostname: "::", port: 0, loopback: false });
 * assert.throws(() => parseListenAddress("example.com:80"), /an IP address or localhost/);
 * ```
 */
export function parseListenAddress(text: string): ListenAddress {
  const colon = text.lastIndexOf(":");
  if (colon < 0) throw new Error(`"${text}" is not HOST:PORT`);
  const host = text.slice(0, colon);
  const portText = text.slice(colon + 1);
  const port = /^\d{1,5}$/.test(portText) ? Number(portText) : NaN;
  if (!(port >= 0 && port <= 65535)) {
    throw new Error(`"${text}": the port must be a number from 0 to 65535`);
  }
  if (host === "localhost") return { hostname: "127.0.0.1", port, loopback: true };
  const v4 = IPV4.exec(host);
  if (v4) {
    if (v4.slice(1).some((part) => Number(part) > 255)) {
      throw new Error(`"${text}": ${host} is not an IPv4 address`);
    }
    return { hostname: host, port, loopback: isLoopbackName(host) };
  }
  if (host.startsWith("[") && host.endsWith("]") && host.includes(":")) {
    const v6 = host.slice(1, -1);
    if (!/^[0-9a-fA-F:.]+$/.test(v6)) throw new Error(`"${text}": ${host} is not an IPv6 address`);
    return { hostname: v6, port, loopback: isLoopbackName(host) };
  }
  throw new Error(
    `"${text}": the host must be an IP address or localhost (IPv6 in brackets: [::1]:8080)`,
  );
}

/**
 * Whether a `Host` header names this machine's loopback (`localhost`, `127.x.y.z`, `[::1]`, with
 * or without a port): what a page reached through DNS rebinding does not send.
 */
export function isLoopbackHost(host: string | null): boolean {
  if (host === null) return false;
  const name = host.startsWith("[") ? host.slice(0, host.indexOf("]") + 1) : host.split(":")[0];
  return isLoopbackName(name);
}

/** `localhost`, an IPv4 address in 127.0.0.0/8, or `[::1]`. */
function isLoopbackName(name: string): boolean {
  return name === "localhost" || name === "[::1]" || /^127\.\d+\.\d+\.\d+$/.test(name);
}
