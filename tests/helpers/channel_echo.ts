/// <reference lib="deno.worker" />
// A Web Worker that sends back every message it receives over the thread channel, in order.
// `{ burst, hold }` instead: sends `burst` numbered messages, then blocks its event loop in
// Atomics.wait on `hold` (at most 10 s) and reports whether the main thread released it, as
// the Python thread blocks while Python runs.
import { acceptChannel } from "../../worker/thread_channel.ts";

interface Burst {
  burst: number;
  hold: SharedArrayBuffer;
}

const channel = acceptChannel<unknown, unknown>(self, (message) => {
  const { burst, hold } = (message ?? {}) as Partial<Burst>;
  if (burst === undefined || hold === undefined) return channel.send(message);
  for (let n = 0; n < burst; n++) channel.send({ n });
  const released = Atomics.wait(new Int32Array(hold), 0, 0, 10_000) !== "timed-out";
  channel.send({ released });
});
