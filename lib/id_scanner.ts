/**
 * Finds the top-level `"id"` of a JSON object fed in chunks, keeping none of the text: how a
 * request line too long to keep (lib/framing.ts) still gets an answer with its own id.
 *
 * It follows the JSON structure byte by byte (strings with their escapes, nesting depth), and
 * checks the grammar of the top-level object only: its keys, colons and commas, the numbers
 * and literals of its members, and the id. Other strings are skipped, and a nested value (an
 * object or an array) is not checked: its brackets are counted and its strings skipped. So a
 * line malformed only there may still give its id (its answer is an error either way). An id
 * counts when it is a number, a string of up to `MAX_ID_BYTES` bytes, or null, as `JSON.parse` would read it; a later duplicate `"id"`
 * wins, as it does for `JSON.parse`. A line that is not an object (a batch, a scalar), or
 * anything malformed before the id, gives no id. No Deno API: it runs under Node too.
 *
 * @module
 */

import type { JsonRpcId } from "./protocol.ts";

/** Longest id string kept, in bytes of its JSON text; a longer one counts as not found. */
export const MAX_ID_BYTES = 1024;
/** `"\u0069\u0064"`, the longest way to write the key `id`, is 12 bytes. */
const MAX_KEY_BYTES = 16;

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const OPEN_OBJECT = 0x7b;
const CLOSE_OBJECT = 0x7d;
const OPEN_ARRAY = 0x5b;
const CLOSE_ARRAY = 0x5d;
const COLON = 0x3a;
const COMMA = 0x2c;

const isSpace = (byte: number) => byte === 0x20 || byte === 0x09 || byte === 0x0a || byte === 0x0d;
/** Bytes of a number or of `true`, `false`, `null`: letters, digits, `+`, `-`, `.`. */
const isScalarByte = (byte: number) =>
  (byte >= 0x30 && byte <= 0x39) || (byte >= 0x61 && byte <= 0x7a) ||
  (byte >= 0x41 && byte <= 0x5a) || byte === 0x2b || byte === 0x2d || byte === 0x2e;

/** Where the scanner is in the line. */
const At = {
  /** Before the first byte that is not white space. */
  Start: 0,
  /** After `{` or `,`: a key (`}` after `{` ends an empty object). */
  Key: 1,
  KeyString: 2,
  Colon: 3,
  Value: 4,
  ValueString: 5,
  /** A number, `true`, `false` or `null`. */
  Scalar: 6,
  /** Inside an object or array that is a member's value. */
  Nested: 7,
  NestedString: 8,
  /** After a member's value: `,` or `}`. */
  AfterValue: 9,
  /** The object ended, or the line is not one, or it is malformed: nothing more to learn. */
  Done: 10,
} as const;
type At = typeof At[keyof typeof At];

/** What a captured token turned out to be. */
type Token = { kind: "value"; value: unknown } | { kind: "overlong" } | { kind: "malformed" };

/**
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { IdScanner } from "./id_scanner.ts";
 * const scanner = new IdScanner();
 * const text = new TextEncoder().encode('{"method":"execute","params":{"id":1},"id":"a\\"b"}');
 * scanner.feed(text.subarray(0, 40));
 * scanner.feed(text.subarray(40));
 * assert.equal(scanner.id, 'a"b');
 * ```
 */
export class IdScanner {
  #at: At = At.Start;
  /** The id found so far; undefined when none counts (yet). */
  #id: JsonRpcId | undefined;
  /** The member being read is `"id"`. */
  #isId = false;
  /** Inside a string, the byte after a backslash. */
  #escaped = false;
  /** Depth inside a nested value. */
  #depth = 0;
  /** The bytes of the key, or of the id's value, being read (undefined: not captured). */
  #captured: number[] | undefined;
  /** The captured token passed its limit: the bytes past it were not kept. */
  #overlong = false;
  #decoder = new TextDecoder();

  /** The top-level `id`, if one was found in what was fed so far. */
  get id(): JsonRpcId | undefined {
    return this.#id;
  }

  /** Reads the next bytes of the line. */
  feed(bytes: Uint8Array): void {
    for (let i = 0; i < bytes.length && this.#at !== At.Done; i++) {
      const byte = bytes[i];
      switch (this.#at) {
        case At.Start:
          if (isSpace(byte)) break;
          // A batch or a scalar has no id of its own.
          this.#at = byte === OPEN_OBJECT ? At.Key : At.Done;
          break;
        case At.Key:
          if (isSpace(byte)) break;
          if (byte === QUOTE) {
            this.#at = At.KeyString;
            this.#capture();
          } else {
            // `{}` has no id, and anything else but a key is malformed.
            this.#at = At.Done;
          }
          break;
        case At.KeyString: {
          if (this.#inString(byte, MAX_KEY_BYTES)) break;
          const key = this.#token(stringText);
          this.#isId = key.kind === "value" && key.value === "id";
          this.#at = key.kind === "malformed" ? At.Done : At.Colon;
          break;
        }
        case At.Colon:
          if (isSpace(byte)) break;
          this.#at = byte === COLON ? At.Value : At.Done;
          break;
        case At.Value:
          if (isSpace(byte)) break;
          if (byte === QUOTE) {
            this.#at = At.ValueString;
            if (this.#isId) this.#capture();
          } else if (byte === OPEN_OBJECT || byte === OPEN_ARRAY) {
            // An object or an array is no valid id: the request's id is unknown.
            if (this.#isId) this.#id = undefined;
            this.#depth = 1;
            this.#at = At.Nested;
          } else if (isScalarByte(byte)) {
            this.#at = At.Scalar;
            // Kept whoever's value it is: a malformed one ends the reading.
            this.#capture();
            this.#keep(byte, MAX_ID_BYTES);
          } else this.#at = At.Done;
          break;
        case At.ValueString:
          if (this.#inString(byte, MAX_ID_BYTES)) break;
          this.#at = At.AfterValue;
          if (this.#isId) this.#endId(this.#token(stringText));
          break;
        case At.Scalar:
          if (isScalarByte(byte)) {
            this.#keep(byte, MAX_ID_BYTES);
            break;
          }
          this.#at = At.AfterValue;
          this.#endScalar(this.#token(scalarText));
          i--; // The byte after the scalar is read again, as what follows a value.
          break;
        case At.Nested:
          if (byte === QUOTE) this.#at = At.NestedString;
          else if (byte === OPEN_OBJECT || byte === OPEN_ARRAY) this.#depth++;
          else if ((byte === CLOSE_OBJECT || byte === CLOSE_ARRAY) && --this.#depth === 0) {
            this.#at = At.AfterValue;
          }
          break;
        case At.NestedString:
          if (this.#escaped) this.#escaped = false;
          else if (byte === BACKSLASH) this.#escaped = true;
          else if (byte === QUOTE) this.#at = At.Nested;
          break;
        case At.AfterValue:
          if (isSpace(byte)) break;
          // `}` ends the object; anything but `,` is malformed.
          this.#at = byte === COMMA ? At.Key : At.Done;
          break;
      }
    }
  }

  /** Reads one byte of a string; false once its closing quote is read. */
  #inString(byte: number, limit: number): boolean {
    if (this.#escaped) this.#escaped = false;
    else if (byte === BACKSLASH) this.#escaped = true;
    else if (byte === QUOTE) return false;
    this.#keep(byte, limit);
    return true;
  }

  /** Starts keeping the bytes of the token that begins. */
  #capture(): void {
    this.#captured = [];
    this.#overlong = false;
  }

  #keep(byte: number, limit: number): void {
    if (this.#captured === undefined) return;
    if (this.#captured.length < limit) this.#captured.push(byte);
    else this.#overlong = true;
  }

  /** The captured token, read as `JSON.parse` reads the text that `textOf` makes of it. */
  #token(textOf: (bytes: Uint8Array, decoder: TextDecoder) => string): Token {
    const captured = this.#captured ?? [];
    this.#captured = undefined;
    if (this.#overlong) return { kind: "overlong" };
    try {
      return { kind: "value", value: JSON.parse(textOf(new Uint8Array(captured), this.#decoder)) };
    } catch {
      return { kind: "malformed" };
    }
  }

  /** A number or a literal ended. */
  #endScalar(token: Token): void {
    if (this.#isId) this.#endId(token);
    // The line is not JSON: an id found before stands.
    else if (token.kind === "malformed") this.#at = At.Done;
  }

  /** The id member's value ended: a later duplicate replaces it, as in `JSON.parse`. */
  #endId(token: Token): void {
    if (token.kind === "malformed") {
      // The line is not JSON: whatever came before, there is no id.
      this.#id = undefined;
      this.#at = At.Done;
      return;
    }
    const value = token.kind === "value" ? token.value : undefined;
    const valid = value === null || typeof value === "string" ||
      (typeof value === "number" && Number.isFinite(value));
    // true, false, a number out of range, an overlong token: no id (unless a later one).
    this.#id = valid ? value : undefined;
  }
}

const stringText = (bytes: Uint8Array, decoder: TextDecoder) => `"${decoder.decode(bytes)}"`;
// A number or a literal is ASCII, or malformed: a byte is a character.
const scalarText = (bytes: Uint8Array) => String.fromCharCode(...bytes);
