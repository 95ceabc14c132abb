/**
 * One real worker process driven straight over its stdio, for what the supervisor never sends
 * it: requests before it is ready, a bad flag.
 */

import assert from "node:assert/strict";
import { loadConfig } from "../supervisor/config.ts";
import { readFrames } from "../lib/framing.ts";
import { buildWorkerCommand } from "../supervisor/worker_command.ts";
import { snapshotPath } from "../supervisor/snapshot.ts";

async function startWorker(): Promise<Deno.ChildProcess> {
  const loaded = loadConfig([], {});
  if (!("config" in loaded)) throw new Error("the default configuration did not load");
  // The snapshot, when an earlier test built it, only makes the start quicker.
  const snapshot = await snapshotPath();
  const command = buildWorkerCommand(
    loaded.config,
    await Deno.stat(snapshot).then(() => snapshot, () => undefined),
  );
  return new Deno.Command(command.executable, {
    args: [...command.args, "--worker-id", "t1"],
    stdin: "piped",
    stdout: "piped",
    stderr: "null",
  }).spawn();
}

Deno.test("a cancel reaches a run that waits for the interpreter to start", async () => {
  const worker = await startWorker();
  const writer = worker.stdin.getWriter();
  const lines = [
    { jsonrpc: "2.0", id: 1, method: "execute", params: { code: "while True: pass" } },
    { jsonrpc: "2.0", id: 2, method: "cancel" },
  ];
  await writer.write(new TextEncoder().encode(lines.map((l) => JSON.stringify(l) + "\n").join("")));
  const answers = new Map<number, { result?: { cancelled: boolean }; error?: { code: number } }>();
  for await (const frame of readFrames(worker.stdout, 1 << 20)) {
    if (frame.kind !== "line") continue;
    const message = JSON.parse(frame.text);
    if (typeof message.id === "number") answers.set(message.id, message);
    if (answers.size === 2) break;
  }
  assert.deepEqual(answers.get(2)?.result, { cancelled: true });
  assert.equal(answers.get(1)?.error?.code, -32003, JSON.stringify(answers.get(1)));
  await writer.close();
  assert.equal((await worker.status).code, 0);
});

Deno.test("a worker given a bad flag says which on stderr and exits with 2", async () => {
  const loaded = loadConfig([], {});
  if (!("config" in loaded)) throw new Error("the default configuration did not load");
  const command = buildWorkerCommand(loaded.config);
  const { code, stdout, stderr } = await new Deno.Command(command.executable, {
    args: [...command.args, "--max-heap-mb", "lots"],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(code, 2);
  assert.equal(stdout.length, 0);
  assert.match(new TextDecoder().decode(stderr), /--max-heap-mb: "lots" is not an integer/);
});
