/// <reference lib="deno.worker" />
// A Web Worker that posts back every message it receives: the baseline for the thread channel.
self.onmessage = (event: MessageEvent) => self.postMessage(event.data);
