/**
 * The id scanner, against what JSON.parse reads from the same line: fed whole, byte by byte,
 * and cut at every position (in the middle of the id, of an escape, of a character).
 */

import assert from "node:assert/strict";
import { IdScanner, MAX_ID_BYTES } from "../lib/id_scanner.ts";
import type { JsonRpcId } from "../lib/protocol.ts";

const encoder = new TextEncoder();

function scan(chunks: Uint8Array[]): JsonRpcId | undefined {
  const scanner = new IdScanner();
  for (const chunk of chunks) scanner.feed(chunk);
  return scanner.id;
}

/** The id, fed in every way: whole, byte by byte, and in two parts cut anywhere. */
function scanAllWays(line: string): JsonRpcId | undefined {
  const bytes = encoder.encode(line);
  const whole = scan([bytes]);
  assert.deepEqual(scan([...bytes].map((b) => Uint8Array.of(b))), whole, `byte by byte: ${line}`);
  for (let cut = 0; cut <= bytes.length; cut++) {
    const parts = [bytes.subarray(0, cut), bytes.subarray(cut)];
    assert.deepEqual(scan(parts), whole, `cut at ${cut}: ${line}`);
  }
  return whole;
}

/** What the id is when the line is read whole: the reference the scanner must match. */
function parsedId(line: string): JsonRpcId | undefined {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    return undefined;
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) return undefined;
  const id = (value as Record<string, unknown>).id;
  if (id === null || (typeof id === "number" && Number.isFinite(id))) return id;
  return typeof id === "string" && encoder.encode(JSON.stringify(id)).length <= MAX_ID_BYTES + 2
    ? id
    : undefined;
}

Deno.test("the id is found wherever it is in the object, as JSON.parse reads it", () => {
  const lines = [
    '{"jsonrpc":"2.0","id":1,"method":"execute","params":{"code":"print(1)"}}',
    '{"jsonrpc":"2.0","method":"execute","params":{"code":"print(1)"},"id":1}',
    '{"id":"req-7","params":[1,2,{"id":3}]}',
    ' \t{ "id" : -12.5e3 , "x" : true }\r',
    '{"id":null,"method":"m"}',
    '{"id":0}',
    '{"params":{"code":"s = \\"\\\\\\"id\\\\\\": 5\\"\\n"},"id":"after escapes"}',
    '{"method":"a\\\\","id":"a\\"b\\\\c\\u00e9\\/"}',
    '{"\\u0069d":"escaped key"}',
    '{"i\\u0064":42}',
    '{"id":"é€😀 multibyte"}',
    '{"id":1,"id":2}',
    '{"id":{"a":1},"id":"later wins"}',
    '{"id":"first","id":{"a":1}}',
    '{"id":true,"id":3}',
    '{"id":false}',
    '{"id":1e400}',
    '{"id":[1]}',
    '{"ids":1,"idx":{"id":2},"d":"id"}',
    '{"params":{"nested":[[{"id":9}],"]}{["],"deep":{"a":{"b":{"id":1}}}},"id":10}',
    '{"a":[],"b":{},"c":"","d":0,"e":null,"id":11}',
    "{}",
    '[{"jsonrpc":"2.0","id":1,"method":"m"}]',
    '"id"',
    "12",
    "null",
    "",
  ];
  for (const line of lines) {
    assert.deepEqual(scanAllWays(line), parsedId(line), line);
  }
});

Deno.test("the id found in a few lines, named", () => {
  assert.equal(scanAllWays('{"params":{"id":1,"code":"\\"id\\":2"},"id":"top"}'), "top");
  assert.equal(scanAllWays('{"params":{"id":1}}'), undefined);
  assert.equal(scanAllWays('[{"id":1}]'), undefined);
  assert.equal(scanAllWays('{"id":"a\\"b"}'), 'a"b');
  assert.equal(scanAllWays('{"id":"\\u00e9"}'), "é");
});

Deno.test("anything malformed before the id gives no id; after it, the id stands", () => {
  for (
    const line of [
      '{"a" 1,"id":2}',
      '{"a":1 "id":2}',
      '{"a":1,,"id":2}',
      '{"a":tru,"id":2}',
      '{"a":01,"id":2}',
      "{id:2}",
      '{"id":01}',
      '{"id":nul}',
      '{"id":"bad \\q escape"}',
      '{"a":1}{"id":2}',
    ]
  ) {
    assert.equal(scanAllWays(line), undefined, line);
  }
  assert.equal(scanAllWays('{"id":3,"a" 1,"id":4}'), 3);
  assert.equal(scanAllWays('{"id":5,"a":tru}'), 5);
});

Deno.test("an id string up to the limit is kept, a longer one is not found", () => {
  const fits = "x".repeat(MAX_ID_BYTES);
  const escaped = "\\n".repeat(MAX_ID_BYTES / 2);
  assert.equal(scan([encoder.encode(`{"id":"${fits}"}`)]), fits);
  assert.equal(scan([encoder.encode(`{"id":"${escaped}"}`)]), "\n".repeat(MAX_ID_BYTES / 2));
  assert.equal(scan([encoder.encode(`{"id":"${fits}y"}`)]), undefined);
  // A longer duplicate: JSON.parse would take it, so the earlier one does not stand.
  assert.equal(scan([encoder.encode(`{"id":1,"id":"${fits}y"}`)]), undefined);
  assert.equal(scan([encoder.encode(`{"id":"${fits}y","id":2}`)]), 2);
  assert.equal(scan([encoder.encode(`{"id":${"1".repeat(MAX_ID_BYTES + 1)}}`)]), undefined);
});

Deno.test("the id before or after megabytes of params, fed in pipe-sized chunks", () => {
  const code = 'print("\\"id\\": 1, {[")\n'.repeat(200_000);
  const params = { code, files: [{ path: "id", content_b64: "aWQ=" }] };
  for (
    const message of [
      { jsonrpc: "2.0", id: "before", method: "execute", params },
      { jsonrpc: "2.0", method: "execute", params, id: "after" },
      { jsonrpc: "2.0", method: "execute", params, id: 123456789 },
    ]
  ) {
    const bytes = encoder.encode(JSON.stringify(message));
    assert.ok(bytes.length > 4 << 20);
    const chunks = [];
    for (let i = 0; i < bytes.length; i += 65_531) chunks.push(bytes.subarray(i, i + 65_531));
    assert.equal(scan(chunks), message.id);
  }
});
