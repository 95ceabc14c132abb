/**
 * The two log formats of `--log-format`: message values rendered alike, one line per record.
 */

import assert from "node:assert/strict";
import type { LogRecord } from "@logtape/logtape";
import { logFormatter } from "../lib/logging.ts";

const record: LogRecord = {
  category: ["pyodide-pool", "metrics"],
  level: "info",
  message: ["metrics on http://", "127.0.0.1", ":", 9464, "/metrics", "", " ", { a: 1 }, ""],
  rawMessage: "metrics on http://{hostname}:{port}/metrics{suffix} {extra}",
  timestamp: Date.UTC(2026, 0, 2, 3, 4, 5),
  properties: { hostname: "127.0.0.1", port: 9464, suffix: "", extra: { a: 1 } },
};

Deno.test("log format json: strings unquoted in the message, values typed in properties", () => {
  const line = logFormatter("json")(record);
  assert.ok(line.endsWith("\n") && !line.slice(0, -1).includes("\n"), line);
  assert.deepEqual(JSON.parse(line), {
    "@timestamp": "2026-01-02T03:04:05.000Z",
    level: "INFO",
    message: 'metrics on http://127.0.0.1:9464/metrics {"a":1}',
    logger: "pyodide-pool.metrics",
    properties: record.properties,
  });
});

Deno.test("log format text: the same message after the time, level and category", () => {
  const line = logFormatter("text")(record);
  assert.match(
    line,
    /^2026-01-02 03:04:05\.000 \+00:00 \[INF\] pyodide-pool·metrics: metrics on http:\/\/127\.0\.0\.1:9464\/metrics \{"a":1\}\n$/,
  );
});
