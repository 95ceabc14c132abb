/**
 * `deno bench` for the parts on every request's path: framing, envelope and params
 * validation, routing, the crossing between a worker's two threads (the thread channel against
 * `postMessage`), and the Python exec helper (one request through `run`, with the isolation
 * reset, in an interpreter booted as a worker boots it).
 *
 *     deno task bench:micro
 *
 * @module
 */

import { readFrames } from "../lib/framing.ts";
import { classifyMessage, parseExecuteParams } from "../lib/protocol.ts";
import { pickWorker, type WorkerView } from "../supervisor/balancer.ts";
import { FsWatch } from "../worker/fs_watch.ts";
import { bootInterpreter } from "../worker/interpreter.ts";
import { openChannel } from "../worker/thread_channel.ts";

const line = JSON.stringify({
  jsonrpc: "2.0",
  id: 1,
  method: "execute",
  params: { code: "x = 1 + 1", timeout_ms: 1000 },
});
const lines = new TextEncoder().encode((line + "\n").repeat(1000));

Deno.bench("framing: 1000 NDJSON lines in one chunk", async () => {
  for await (const _ of readFrames(ReadableStream.from([lines]), 1 << 24)) {
    // Counting is all: the frames are the work.
  }
});

Deno.bench("protocol: parse, classify and validate one execute", () => {
  const inbound = classifyMessage(JSON.parse(line));
  if (inbound.kind === "request") parseExecuteParams(inbound.message.params);
});

const workers: WorkerView[] = Array.from({ length: 8 }, (_, i) => ({
  id: `w${i}`,
  state: i % 3 === 0 ? "busy" : "idle",
  retiring: false,
  lastUsedAt: i * 7 % 5,
}));
Deno.bench("routing: pick a worker among 8", () => {
  pickWorker(workers);
});

// A run request and an outcome of the size a trivial request has, there and back.
const runMessage = { type: "run", seq: 1, request: line, files: [], packages: [], stream: false };
const helper = (name: string) =>
  new Worker(new URL(`../tests/helpers/${name}`, import.meta.url).href, { type: "module" });
let echoed: () => void = () => {};
const channelEcho = helper("channel_echo.ts");
const channel = openChannel<unknown, unknown>(channelEcho, () => echoed());
const postEcho = helper("post_echo.ts");
postEcho.onmessage = () => echoed();
const roundTrip = (send: () => void) =>
  new Promise<void>((resolve) => {
    echoed = resolve;
    send();
  });
Deno.bench("thread crossing: a run message there and back, thread channel", async () => {
  await roundTrip(() => channel.send(runMessage));
});
Deno.bench("thread crossing: the same, postMessage", async () => {
  await roundTrip(() => postEcho.postMessage(runMessage));
});

const { pyodide, runtime } = await bootInterpreter();
const noop = () => {};
runtime.install(noop, noop, 1 << 20);
runtime.seal();
const run = runtime.run.copy();
const request = JSON.stringify({ code: "x = 1 + 1", stdin: "" });
const fsWatch = new FsWatch(pyodide.FS);
fsWatch.mark(JSON.parse(runtime.watched_paths()));
const reset = runtime.reset.copy();
Deno.bench("exec helper: one trivial request through run(), then the reset", () => {
  run(request);
  if (fsWatch.changed().length > 0) throw new Error("the trivial request changed a file");
  reset();
});
Deno.bench("exec helper: runPython of the same line, for comparison", () => {
  pyodide.runPython("x = 1 + 1");
});
