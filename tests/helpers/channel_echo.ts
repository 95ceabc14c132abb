/// <reference lib="deno.worker" />
// A Web Worker that sends back every message it receives over the thread channel, in order.
import { acceptChannel } from "../../worker/thread_channel.ts";

const channel = acceptChannel<unknown, unknown>(self, (message) => channel.send(message));
