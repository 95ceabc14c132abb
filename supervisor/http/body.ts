/**
 * Reading a request's body within the limits: at most `--max-line-bytes` (the longest message
 * the pool takes on stdin, so HTTP takes no more: 413 past it), within `--http-body-timeout` of
 * its headers (408), and within a budget shared by every body being read at once (503), so that
 * many large bodies at once cannot take the supervisor's memory.
 *
 * @module
 */

import { badRequest, refusal } from "./responses.ts";
import { ErrorCode, RpcError } from "../../lib/errors.ts";

/** A body read whole, or the response that refuses it. */
export type BodyOutcome = { text: string } | { refused: Response };

export interface BodyLimits {
  maxBytes: number;
  timeoutMs: number;
}

/** The bytes of request bodies held at once; past the budget new bodies wait outside (503). */
export class BodyBudget {
  #held = 0;
  constructor(readonly maxBytes: number) {}

  /** Takes `bytes` from the budget; false if it would pass. */
  take(bytes: number): boolean {
    if (this.#held + bytes > this.maxBytes) return false;
    this.#held += bytes;
    return true;
  }

  give(bytes: number): void {
    this.#held -= bytes;
  }
}

/**
 * Reads `request`'s body as UTF-8 text. A declared length past the cap is refused before a
 * byte is read. The budget is given back once the text is made (the text is then the caller's).
 */
export async function readBody(
  request: Request,
  limits: BodyLimits,
  budget: BodyBudget,
): Promise<BodyOutcome> {
  const tooLarge = (bytes: number) => ({
    refused: badRequest(413, `the body of ${bytes} bytes or more exceeds the limit`, {
      bytes,
      max_line_bytes: limits.maxBytes,
    }),
  });
  const declared = Number(request.headers.get("content-length") ?? NaN);
  if (declared > limits.maxBytes) return tooLarge(declared);
  if (request.body === null) return { text: "" };
  const reader = request.body.getReader();
  const chunks: Uint8Array[] = [];
  let bytes = 0;
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    reader.cancel().catch(() => {});
  }, limits.timeoutMs);
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      if (bytes + value.length > limits.maxBytes) {
        reader.cancel().catch(() => {});
        return tooLarge(bytes + value.length);
      }
      if (!budget.take(value.length)) {
        reader.cancel().catch(() => {});
        return {
          refused: refusal(
            503,
            new RpcError(
              ErrorCode.Overloaded,
              "overloaded: too many request bodies are being read at once; retry later",
              { max_body_bytes_in_flight: budget.maxBytes },
            ),
            { "retry-after": "1" },
          ),
        };
      }
      bytes += value.length;
      chunks.push(value);
    }
    if (!timedOut) return { text: decode(chunks, bytes) };
  } catch (error) {
    if (!timedOut) {
      return { refused: badRequest(400, `the body could not be read: ${String(error)}`) };
    }
  } finally {
    clearTimeout(timer);
    budget.give(bytes);
  }
  return {
    refused: badRequest(408, "the body came too slowly", { timeout_ms: limits.timeoutMs }),
  };
}

function decode(chunks: Uint8Array[], bytes: number): string {
  if (chunks.length === 1) return new TextDecoder().decode(chunks[0]);
  const whole = new Uint8Array(bytes);
  let at = 0;
  for (const chunk of chunks) {
    whole.set(chunk, at);
    at += chunk.length;
  }
  return new TextDecoder().decode(whole);
}
