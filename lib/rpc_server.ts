/**
 * The JSON-RPC 2.0 server side of a line stream: parses each line once, validates it,
 * dispatches requests to method handlers and notifications to a listener, and writes exactly
 * one response per request. Both the supervisor (towards its client) and `worker_server.ts`
 * (towards the supervisor) serve through this module.
 *
 * @module
 */

import {
  createJSONRPCErrorResponse,
  type JSONRPCResponse,
  JSONRPCServer,
  type JSONRPCServerMiddleware,
} from "json-rpc-2.0";
import { ErrorCode, RpcError, toRpcError } from "./errors.ts";
import { type Frame, type LineWriter, readFrames } from "./framing.ts";
import {
  classifyMessage,
  errorResponse,
  type JsonRpcId,
  type Params,
  type ResponseMessage,
} from "./protocol.ts";

/** What a handler learns about the request it serves. */
export interface RequestContext {
  id: JsonRpcId;
}

export type MethodHandler = (
  params: Params | undefined,
  context: RequestContext,
) => unknown | Promise<unknown>;

export interface RpcServerOptions {
  /** Called for each valid notification; notifications never get a response. */
  onNotification?: (method: string, params: Params | undefined) => void;
  /** Called with errors that were not RpcErrors: bugs worth a log line. */
  onUnexpectedError?: (method: string, error: unknown) => void;
  /** Longest accepted line in bytes; longer lines get an error and are skipped. */
  maxLineBytes: number;
  /** Longest answer line, in bytes (UTF-8); a longer one is answered with an error instead. */
  maxAnswerBytes?: number;
  /** What to do about an answer past `maxAnswerBytes`, for its error's message. */
  answerLimitHint?: string;
  /**
   * Backpressure: while more than this many characters of responses wait to be written (the
   * reader is not reading), no further request is read, so memory stays bounded by the requests
   * already taken. Unset: no limit.
   */
  maxUnwrittenChars?: number;
  /** Called when reading pauses for a reader that does not read, with what waits for it. */
  onReadingPaused?: (unwrittenChars: number) => void;
}

/**
 * Serves JSON-RPC methods over newline-delimited JSON.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { LineWriter } from "./framing.ts";
 * import { RpcServer } from "./rpc_server.ts";
 * const out: string[] = [];
 * const writer = new LineWriter(new WritableStream({ write: (c) => void out.push(new TextDecoder().decode(c)) }));
 * const server = new RpcServer({ ping: () => "pong" }, { maxLineBytes: 1024 });
 * const input = ReadableStream.from([new TextEncoder().encode('{"jsonrpc":"2.0","id":1,"method":"ping"}\n')]);
 * await server.serve(input, writer);
 * await server.settled();
 * await writer.flushed();
 * assert.equal(out.join(""), '{"jsonrpc":"2.0","id":1,"result":"pong"}\n');
 * ```
 */
const NON_ASCII = /[\u0080-\uffff]/;

/** Requests of a batch taken in one turn of the event loop. */
const BATCH_SLICE = 1000;

/** The three largest fields of an answer too large to send, with their sizes in JSON. */
function largestFields(result: unknown): { field: string; chars: number }[] {
  if (typeof result !== "object" || result === null) return [];
  return Object.entries(result)
    .map(([field, value]) => ({ field, chars: JSON.stringify(value)?.length ?? 0 }))
    .sort((a, b) => b.chars - a.chars)
    .slice(0, 3);
}

/** The UTF-8 bytes of a JSON line, measured without a copy when it is ASCII (base64, mostly). */
function utf8Bytes(line: string): number {
  return NON_ASCII.test(line) ? new TextEncoder().encode(line).byteLength : line.length;
}

/**
 * A bound on the characters of `value` in JSON, found without writing it: each string
 * character at most 6 (`\u001f`), each number at most 24, plus the punctuation.
 */
function jsonCharsBound(value: unknown): number {
  if (typeof value === "string") return 2 + 6 * value.length;
  if (typeof value !== "object" || value === null) return 24;
  let chars = 2;
  if (Array.isArray(value)) {
    for (const item of value) chars += 1 + jsonCharsBound(item);
  } else {
    for (const [key, item] of Object.entries(value)) {
      chars += 4 + 6 * key.length + jsonCharsBound(item);
    }
  }
  return chars;
}

/**
 * The error for a result whose answer line would pass `limit` bytes (-32005), or undefined
 * if it fits. Written only when a bound says it may not fit: most results are far below.
 */
export function answerTooLarge(
  result: unknown,
  limit: number,
  hint?: string,
): RpcError | undefined {
  // The envelope around a result, `{"jsonrpc":"2.0","id":...,"result":}`, with a short id: a
  // long one may still pass, and the server's own check refuses that answer as it writes it.
  const envelope = 64;
  // A character is 1 to 3 bytes of UTF-8 (a surrogate pair, 4 bytes, is 2 characters).
  if ((jsonCharsBound(result) + envelope) * 3 <= limit) return undefined;
  const bytes = utf8Bytes(JSON.stringify(result)) + envelope;
  if (bytes <= limit) return undefined;
  return tooLargeError(bytes, limit, hint, result);
}

function tooLargeError(bytes: number, limit: number, hint: string | undefined, result: unknown) {
  const status = (result as { status?: unknown } | null)?.status;
  return new RpcError(
    ErrorCode.AnswerTooLarge,
    `the answer is ${bytes} bytes, over the ${limit}-byte line limit${hint ? `: ${hint}` : ""}`,
    {
      bytes,
      max_answer_bytes: limit,
      largest_fields: largestFields(result),
      // How the run ended, for an `execute` answer: the code ran.
      ...(typeof status === "string" ? { status } : {}),
    },
  );
}

export class RpcServer {
  #server: JSONRPCServer<RequestContext>;
  #inFlight = new Set<Promise<void>>();

  constructor(
    methods: Record<string, MethodHandler>,
    private readonly options: RpcServerOptions,
  ) {
    this.#server = new JSONRPCServer<RequestContext>({
      errorListener: (_message, error) => options.onUnexpectedError?.("?", error),
    });
    for (const [name, handler] of Object.entries(methods)) {
      this.#server.addMethod(name, (params, context) => handler(params, context));
    }
    this.#server.applyMiddleware(this.#mapErrors(Object.keys(methods)));
  }

  /**
   * Reads frames until the stream ends, and resolves then: requests still running are
   * answered later (await `settled()` for them), or not at all if the caller exits.
   */
  async serve(input: AsyncIterable<Uint8Array>, writer: LineWriter): Promise<void> {
    for await (const frame of readFrames(input, this.options.maxLineBytes)) {
      const pending = this.answer(frame).then((answer) => {
        if (answer !== undefined) writer.write(answer.line);
      });
      this.#inFlight.add(pending);
      pending.finally(() => this.#inFlight.delete(pending));
      if (writer.unwritten > (this.options.maxUnwrittenChars ?? Infinity)) {
        this.options.onReadingPaused?.(writer.unwritten);
        await writer.flushed();
      }
    }
  }

  /**
   * The line that carries `response`; an answer that cannot be written (past
   * `maxAnswerBytes`, or past what a JavaScript string holds) becomes an error that says so,
   * for the request's id: the reader would otherwise refuse the line, or the server fail. In a
   * batch, the largest answers become errors until the whole line fits.
   */
  #lineOf(response: ResponseMessage | ResponseMessage[]): string {
    const limit = this.options.maxAnswerBytes ?? Infinity;
    if (!Array.isArray(response)) return this.#lineOfOne(response, limit);
    const lines = response.map((one) => this.#lineOfOne(one, limit));
    const sizes = lines.map(utf8Bytes);
    let total = sizes.reduce((sum, size) => sum + size + 1, 1);
    if (total <= limit) return `[${lines.join(",")}]`;
    // Largest first, sorted once: neither a spread of the sizes (past ~100,000 answers, more
    // arguments than the stack holds) nor a search for the largest per answer shrunk (n^2).
    const bySize = sizes.map((_, index) => index).sort((a, b) => sizes[b] - sizes[a]);
    for (const largest of bySize) {
      if (total <= limit) break;
      const error = tooLargeError(sizes[largest], limit, this.#batchHint, response[largest].result);
      lines[largest] = JSON.stringify(errorResponse(response[largest].id, error));
      const size = utf8Bytes(lines[largest]);
      total += size - sizes[largest];
      // An error line is the smallest an answer gets: past that, nothing more to shrink.
      if (size >= sizes[largest]) break;
      sizes[largest] = size;
    }
    return `[${lines.join(",")}]`;
  }

  get #batchHint(): string {
    const hint = this.options.answerLimitHint;
    return `the whole batch must fit in one line${hint ? `; ${hint}` : ""}`;
  }

  #lineOfOne(response: ResponseMessage, limit: number): string {
    try {
      const line = JSON.stringify(response);
      if (line.length * 3 <= limit) return line;
      const bytes = utf8Bytes(line);
      if (bytes <= limit) return line;
      return JSON.stringify(errorResponse(
        response.id,
        tooLargeError(bytes, limit, this.options.answerLimitHint, response.result),
      ));
    } catch (error) {
      return JSON.stringify(errorResponse(
        response.id,
        new RpcError(
          ErrorCode.InternalError,
          `Internal error: the answer could not be sent (${(error as Error).message})`,
          { reason: (error as Error).message },
        ),
      ));
    }
  }

  /**
   * Answers one frame, as `serve` would write it: the response (or batch), and the line that
   * carries it, within `maxAnswerBytes`; undefined for notifications. For transports that
   * carry one message per exchange (HTTP).
   */
  async answer(
    frame: Frame,
  ): Promise<{ line: string; response: ResponseMessage | ResponseMessage[] } | undefined> {
    const response = await this.handleFrame(frame);
    return response === undefined ? undefined : { line: this.#lineOf(response), response };
  }

  /** Resolves when every request received so far has been answered. */
  async settled(): Promise<void> {
    while (this.#inFlight.size > 0) await Promise.all(this.#inFlight);
  }

  /** Answers one frame: a response, a batch of responses, or nothing for notifications. */
  async handleFrame(
    frame: Frame,
  ): Promise<ResponseMessage | ResponseMessage[] | undefined> {
    if (frame.kind === "oversized") {
      // Its own id when the line's top-level `id` could be read as it went by (framing.ts).
      return errorResponse(
        frame.id ?? null,
        new RpcError(
          ErrorCode.InvalidRequest,
          `Invalid Request: line of ${frame.bytes} bytes exceeds the limit of ${this.options.maxLineBytes} bytes`,
          { bytes: frame.bytes, max_line_bytes: this.options.maxLineBytes },
        ),
      );
    }
    let value: unknown;
    try {
      value = JSON.parse(frame.text);
    } catch (error) {
      return errorResponse(
        null,
        new RpcError(ErrorCode.ParseError, "Parse error: the line is not valid JSON", {
          reason: (error as Error).message,
        }),
      );
    }
    if (!Array.isArray(value)) return await this.#handleOne(value);
    if (value.length === 0) {
      return errorResponse(
        null,
        new RpcError(ErrorCode.InvalidRequest, "Invalid Request: a batch must not be empty", {
          problem: "empty batch",
        }),
      );
    }
    // Taken a slice at a time, with the event loop let turn between: one batch of many thousand
    // requests (as many as --max-line-bytes holds) would otherwise hold up every other client.
    const answering: Promise<ResponseMessage | undefined>[] = [];
    for (let start = 0; start < value.length; start += BATCH_SLICE) {
      if (start > 0) await new Promise((resolve) => setTimeout(resolve, 0));
      for (const entry of value.slice(start, start + BATCH_SLICE)) {
        answering.push(this.#handleOne(entry));
      }
    }
    const responses = await Promise.all(answering);
    const present = responses.filter((r): r is ResponseMessage => r !== undefined);
    return present.length > 0 ? present : undefined;
  }

  async #handleOne(value: unknown): Promise<ResponseMessage | undefined> {
    const inbound = classifyMessage(value);
    switch (inbound.kind) {
      case "invalid":
        return errorResponse(inbound.id, inbound.error);
      case "notification":
        try {
          this.options.onNotification?.(inbound.message.method, inbound.message.params);
        } catch (error) {
          this.options.onUnexpectedError?.(inbound.message.method, error);
        }
        return undefined;
      case "request": {
        const { message } = inbound;
        const response = await this.#server.receive(message, { id: message.id });
        return (response ?? undefined) as ResponseMessage | undefined;
      }
    }
  }

  /** Turns thrown errors into error responses with a code and data, and names unknown methods. */
  #mapErrors(known: string[]): JSONRPCServerMiddleware<RequestContext> {
    return async (next, request, context): Promise<JSONRPCResponse | null> => {
      const id = request.id ?? null;
      if (!this.#server.hasMethod(request.method)) {
        const error = new RpcError(
          ErrorCode.MethodNotFound,
          `Method not found: ${JSON.stringify(request.method)}`,
          { method: request.method, available: known },
        );
        return createJSONRPCErrorResponse(id, error.code, error.message, error.data);
      }
      try {
        return await next(request, context);
      } catch (thrown) {
        if (!(thrown instanceof RpcError)) {
          this.options.onUnexpectedError?.(request.method, thrown);
        }
        const error = toRpcError(thrown);
        return createJSONRPCErrorResponse(id, error.code, error.message, error.data);
      }
    };
  }
}
