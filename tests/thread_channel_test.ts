import assert from "node:assert/strict";
import { MAILBOX_BYTES, openChannel } from "../worker/thread_channel.ts";

/**
 * Opens a channel to the echoing Web Worker, sends `messages` in one turn, and returns the
 * first `expected` messages that come back (`onEach` sees each as it arrives).
 */
async function exchange(
  messages: unknown[],
  expected = messages.length,
  onEach: (message: unknown) => void = () => {},
): Promise<unknown[]> {
  const worker = new Worker(new URL("./helpers/channel_echo.ts", import.meta.url).href, {
    type: "module",
  });
  const received: unknown[] = [];
  const { promise, resolve } = Promise.withResolvers<void>();
  const channel = openChannel<unknown, unknown>(worker, (message) => {
    received.push(message);
    onEach(message);
    if (received.length === expected) resolve();
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

const echo = (messages: unknown[]) => exchange(messages);

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

Deno.test("the thread channel keeps order with many messages in flight both ways", async () => {
  const sent = Array.from({ length: 20_000 }, (_, n) => ({ n }));
  const received = await echo(sent);
  assert.deepEqual(received, sent);
});

Deno.test("a thread's messages arrive while its event loop is blocked", async () => {
  // The Python thread's event loop does not run while Python does: its output, and a run's
  // `done` before the reset, must reach the main thread without it.
  const hold = new SharedArrayBuffer(4);
  const burst = 50;
  let arrived = 0;
  const received = await exchange([{ burst, hold }], burst + 1, () => {
    if (++arrived === burst) {
      Atomics.store(new Int32Array(hold), 0, 1);
      Atomics.notify(new Int32Array(hold), 0);
    }
  });
  assert.deepEqual(received.slice(0, burst), Array.from({ length: burst }, (_, n) => ({ n })));
  assert.deepEqual(received[burst], { released: true });
});

Deno.test("values JSON would change still arrive unchanged", async () => {
  const sent = [[1, undefined, 3], { nan: NaN, inf: -Infinity }, -0, [1, , 3]];
  const received = await echo(sent);
  assert.deepEqual(received, sent);
  assert.ok(Object.is(received[2], -0));
});
