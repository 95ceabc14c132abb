/**
 * Logging setup shared by the supervisor and the workers: LogTape records, written to
 * stderr only, since stdout carries the JSON-RPC stream.
 *
 * @module
 */

import {
  configure,
  getJsonLinesFormatter,
  getLogger,
  getTextFormatter,
  type Logger,
  type LogRecord,
  type Sink,
  type TextFormatter,
} from "@logtape/logtape";

export type LogLevelName = "debug" | "info" | "warning" | "error";
export type LogFormat = "text" | "json";

/** The root category of every logger in the project. */
export const ROOT_CATEGORY = "pyodide-pool";

/**
 * Sends every record at `level` or above to stderr, as text or JSON lines.
 *
 * A synchronous sink: a process that exits right after logging (a worker told to stop, a
 * supervisor rejecting its config) must not lose the line that says why.
 *
 * @example
 * ```ts
 * import { configureLogging, logger } from "./logging.ts";
 * await configureLogging("warning", "text");
 * logger("example").warning("written to stderr");
 * ```
 */
export async function configureLogging(level: LogLevelName, format: LogFormat): Promise<void> {
  const formatter = logFormatter(format);
  const encoder = new TextEncoder();
  const stderr: Sink = (record: LogRecord) => {
    Deno.stderr.writeSync(encoder.encode(formatter(record)));
  };
  await configure({
    reset: true,
    sinks: { stderr },
    loggers: [
      { category: [ROOT_CATEGORY], lowestLevel: level, sinks: ["stderr"] },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: ["stderr"] },
    ],
  });
}

/** In a message, strings as they are, anything else as compact JSON. */
const renderValue = (value: unknown) => typeof value === "string" ? value : JSON.stringify(value);

/**
 * One line per record. Both formats render the message's values alike, so that `--log-format
 * json` says `worker w1 ready`, not `worker "w1" ready` (LogTape's JSON formatter would quote
 * every string value); the values stay, typed, in `properties`.
 */
export function logFormatter(format: LogFormat): TextFormatter {
  if (format === "text") {
    return getTextFormatter({ timestamp: "date-time-timezone", value: renderValue });
  }
  const json = getJsonLinesFormatter();
  return (record: LogRecord) => {
    const message = record.message.map((part, i) => i % 2 === 1 ? renderValue(part) : part);
    return json({ ...record, message: [message.join("")] });
  };
}

/** The logger for one part of the project, e.g. `logger("pool")`. */
export function logger(...category: string[]): Logger {
  return getLogger([ROOT_CATEGORY, ...category]);
}
