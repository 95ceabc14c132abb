import assert from "node:assert/strict";
import { MAILBOX_BYTES, openChannel } from "../worker/thread_channel.ts";

/** Sends `messages` in one turn to an echoing Web Worker and returns what comes back. */
async function echo(messages: unknown[]): Promise<unknown[]> {
  const worker = new Worker(new URL("./helpers/channel_echo.ts", import.meta.url).href, {
    type: "module",
  });
  const received: unknown[] = [];
  const { promise, resolve } = Promise.withResolvers<void>();
  const channel = openChannel<unknown, unknown>(worker, (message) => {
    received.push(message);
    if (received.length === messages.length) resolve();
  });
  try {
    for (const message of messages) channel.send(message);
    await promise;
    return received;
  } finally {
    channel.close();
    worker.terminate();
  }
}

Deno.test("the thread channel keeps order across batches, posted messages and shared memory", async () => {
  const big = "x".repeat(MAILBOX_BYTES); // too large for the mailbox: posted
  const control = new SharedArrayBuffer(8); // not JSON: posted
  const sent: unknown[] = [
    { type: "a", n: 1 },
    { type: "big", text: big },
    ...Array.from({ length: 50 }, (_, n) => ({ type: "small", n, text: "é\u0000\n" })),
    { type: "control", control },
    { type: "last", nested: { list: [1, null, true, "z"] } },
  ];
  const received = await echo(sent);
  assert.equal(received.length, sent.length);
  assert.deepEqual(
    received.map((m) => (m as { type: string }).type),
    sent.map((m) => (m as { type: string }).type),
  );
  assert.equal((received[1] as { text: string }).text, big);
  assert.deepEqual(received.slice(2, 52), sent.slice(2, 52));
  // A posted SharedArrayBuffer is the same memory on both sides, not a copy.
  const echoed = (received[52] as { control: SharedArrayBuffer }).control;
  new Int32Array(echoed)[0] = 7;
  assert.equal(new Int32Array(control)[0], 7);
  assert.deepEqual(received[53], sent[53]);
});

Deno.test("a string that JSON escapes past the mailbox size is posted, not cut", async () => {
  // 6 bytes of JSON per character: within the size estimate, beyond the mailbox.
  const text = "\u0001".repeat(Math.floor(MAILBOX_BYTES / 4));
  const [back] = await echo([{ text }]);
  assert.equal((back as { text: string }).text, text);
});
