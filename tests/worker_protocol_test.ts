/** The worker's flags: written by the supervisor, read back by the worker, checked once. */

import assert from "node:assert/strict";
import {
  parseWorkerFlags,
  WORKER_DEFAULTS,
  workerArgv,
  WorkerFlagError,
  type WorkerFlags,
  workerNotification,
} from "../lib/worker_protocol.ts";

Deno.test("flags written by workerArgv read back the same", () => {
  const flags: WorkerFlags = {
    workerId: "w7",
    snapshot: "/tmp/snapshot.bin",
    lockFileUrl: "file:///tmp/pyodide-lock.json",
    allowNetwork: true,
    maxFileBytes: 0,
    maxOutputBytes: 1000,
    maxHeapMb: 256,
    recycleHeapMb: 128,
    maxRssMb: 512,
    maxFsMb: 64,
    maxLineBytes: 1 << 28,
    maxAnswerBytes: 1 << 24,
    isolation: "tenant",
    maxParkedMb: 32,
    maxRecoveriesPerMinute: 5,
    logLevel: "debug",
    logFormat: "json",
    failpoints: true,
    interruptGraceMs: 0,
    defaultTimeoutMs: 1000,
  };
  assert.deepEqual(parseWorkerFlags(workerArgv(flags)), flags);
});

Deno.test("flags left out take the defaults, and are not written", () => {
  assert.deepEqual(workerArgv({}), []);
  assert.deepEqual(workerArgv({ snapshot: undefined, allowNetwork: false }), []);
  assert.deepEqual(parseWorkerFlags([]), WORKER_DEFAULTS);
  assert.deepEqual(workerArgv({ workerId: "w1", maxHeapMb: 64 }), [
    "--max-heap-mb",
    "64",
    "--worker-id",
    "w1",
  ]);
});

Deno.test("a bad flag is an error that names it", () => {
  const bad: [string[], RegExp][] = [
    [["--max-heap-mb", "lots"], /--max-heap-mb: "lots" is not an integer >= 1/],
    [["--max-heap-mb", ""], /--max-heap-mb: "" is not an integer >= 1/],
    [["--max-output-bytes", "1.5"], /--max-output-bytes/],
    [["--max-output-bytes", "0"], /--max-output-bytes: "0" is not an integer >= 1/],
    [["--isolation", "some"], /--isolation: "some" is not one of request, tenant, none/],
    [["--log-level", "loud"], /--log-level/],
    [["--no-such-flag"], /no-such-flag/],
    [["--max-heap-mb"], /max-heap-mb/],
    [["positional"], /positional/],
  ];
  for (const [argv, message] of bad) {
    assert.throws(() => parseWorkerFlags(argv), (error: unknown) => {
      assert.ok(error instanceof WorkerFlagError, String(error));
      assert.match(error.message, message);
      return true;
    });
  }
});

Deno.test("a worker notification is a JSON-RPC notification", () => {
  assert.equal(
    JSON.stringify(workerNotification("output", { id: 3, stream: "stdout", text: "hi" })),
    '{"jsonrpc":"2.0","method":"output","params":{"id":3,"stream":"stdout","text":"hi"}}',
  );
});
