/**
 * Who may use the HTTP service: bearer tokens from `--http-token-file`, one a line, each
 * optionally named as a tenant (`name:token`). A named token fixes the tenant of every request
 * made with it, so that the isolation modes and the sessions' owners hold per API key.
 *
 * Tokens are compared in constant time (the SHA-256 of what was presented against the SHA-256
 * of every token, with no early exit), are never logged, and never leave this module: a caller
 * is known by its token's name and digest.
 *
 * @module
 */

import { createHash, timingSafeEqual } from "node:crypto";
import { isName } from "../../lib/protocol.ts";
import { ConfigError } from "../config.ts";

/** Who made a request, once its token was accepted. */
export interface Caller {
  /** The token's name: the tenant its requests run for; undefined for an unnamed token. */
  tenant?: string;
  /**
   * Which token it was, to tie state (an MCP session) to it: the token's name and a digest of
   * it, or `anyone` when no token is needed. Never the token itself, nor its line in the file:
   * after a reload (SIGHUP) another token may be on that line, and must not inherit the state.
   */
  key: string;
}

/** The shortest token accepted: shorter ones could be guessed. */
export const MIN_TOKEN_CHARS = 16;

interface Entry {
  digest: Buffer;
  caller: Caller;
}

const digestOf = (text: string) => createHash("sha256").update(text).digest();

/**
 * The tokens the service accepts, or none needed (no token file).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Tokens } from "./auth.ts";
 * const tokens = Tokens.parse("# ops\nalice:0123456789abcdef0123\nfedcba9876543210fedc\n", "tokens.txt");
 * assert.equal(tokens.check("Bearer 0123456789abcdef0123")?.tenant, "alice");
 * assert.equal(tokens.check("Bearer fedcba9876543210fedc")?.tenant, undefined);
 * assert.equal(tokens.check("Bearer wrong"), undefined);
 * assert.equal(tokens.check(null), undefined);
 * assert.deepEqual(Tokens.none().check(null), { key: "anyone" });
 * ```
 */
export class Tokens {
  private constructor(readonly required: boolean, readonly entries: readonly Entry[]) {}

  /** No token file: every request is let in. */
  static none(): Tokens {
    return new Tokens(false, []);
  }

  /** Reads and parses the token file; a file that cannot be used stops the start. */
  static load(path: string): Tokens {
    let text: string;
    try {
      text = Deno.readTextFileSync(path);
    } catch (error) {
      throw new ConfigError(`cannot read httpTokenFile ${path}: ${(error as Error).message}`);
    }
    return Tokens.parse(text, path);
  }

  /**
   * Parses a token file's text: blank lines and `#` comments are skipped; a line with a `:`
   * is `name:token`, the name being a tenant (1-128 printable ASCII). The messages name the
   * line, never the token.
   */
  static parse(text: string, path: string): Tokens {
    const entries: Entry[] = [];
    const seen = new Set<string>();
    text.split("\n").forEach((raw, index) => {
      const line = raw.trim();
      if (line === "" || line.startsWith("#")) return;
      const where = `httpTokenFile ${path}, line ${index + 1}`;
      const colon = line.indexOf(":");
      const name = colon < 0 ? undefined : line.slice(0, colon).trim();
      const token = colon < 0 ? line : line.slice(colon + 1).trim();
      if (name !== undefined && !isName(name)) {
        throw new ConfigError(`${where}: the name must be 1-128 printable ASCII characters`);
      }
      if (token.length < MIN_TOKEN_CHARS || /\s/.test(token)) {
        throw new ConfigError(
          `${where}: a token must be at least ${MIN_TOKEN_CHARS} characters, without spaces ` +
            "(make one with: openssl rand -hex 32)",
        );
      }
      if (seen.has(token)) throw new ConfigError(`${where}: the same token is on an earlier line`);
      seen.add(token);
      const digest = digestOf(token);
      // The name is part of the key: a token renamed on a reload runs for another tenant, and
      // must not reach the state opened for the old one.
      const key = `${name ?? ""}#${digest.toString("hex")}`;
      const caller: Caller = name === undefined ? { key } : { tenant: name, key };
      entries.push({ digest, caller });
    });
    if (entries.length === 0) {
      throw new ConfigError(`httpTokenFile ${path} holds no token`);
    }
    return new Tokens(true, entries);
  }

  /**
   * The caller an `Authorization` header names, or undefined when the token is missing or
   * wrong. Without a token file, anyone.
   */
  check(authorization: string | null): Caller | undefined {
    if (!this.required) return { key: "anyone" };
    const match = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(authorization ?? "");
    if (!match) return undefined;
    const presented = digestOf(match[1]);
    let found: Caller | undefined;
    // Every entry is compared, so the time taken does not say which one matched.
    for (const entry of this.entries) {
      if (timingSafeEqual(presented, entry.digest)) found = entry.caller;
    }
    return found;
  }
}
