/**
 * A client that stops reading its answers: the supervisor stops reading its requests (its
 * memory stays bounded by the requests it took), and once the client reads again every answer
 * comes, none lost.
 */

import assert from "node:assert/strict";
import { readFrames } from "../lib/framing.ts";
import { supervisorCommand } from "./helpers/supervisor_process.ts";
import { metricsPortIn, scrapeMetrics } from "./helpers/metrics.ts";
import { waitFor, waitUntil } from "./helpers/processes.ts";

const ANSWER_CHARS = 1_000_000;

Deno.test("a client that stops reading: the supervisor reads no more requests, and loses none", async () => {
  const [executable, args] = supervisorCommand([
    "--pool-size",
    "1",
    "--metrics-port",
    "0",
    "--max-unread-mb",
    "16",
  ]);
  const child = new Deno.Command(executable, {
    args,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
    env: { PYODIDE_LOG_LEVEL: "info" },
  }).spawn();
  let stderr = "";
  const stderrDone = (async () => {
    for await (const text of child.stderr.pipeThrough(new TextDecoderStream())) stderr += text;
  })();
  const port = await waitFor("the metrics port", () => Promise.resolve(metricsPortIn(stderr)));
  await waitUntil("the pool ready", () => Promise.resolve(stderr.includes("pool ready")));
  const answered = async () =>
    (await scrapeMetrics(port)).get('pyodide_pool_requests_total{status="ok"}') ?? 0;

  const stdin = child.stdin.getWriter();
  const send = (ids: number[]) =>
    stdin.write(
      new TextEncoder().encode(
        ids.map((id) =>
          JSON.stringify({
            jsonrpc: "2.0",
            id,
            method: "execute",
            params: { code: `'x' * ${ANSWER_CHARS}` },
          }) + "\n"
        ).join(""),
      ),
    );
  const range = (from: number, count: number) => Array.from({ length: count }, (_, i) => from + i);
  // 20 answers of 1 MB are more than the 16 MB the supervisor holds for this client.
  await send(range(1, 20));
  await waitUntil("20 answered", async () => await answered() === 20);
  await send(range(21, 10));
  await waitUntil(
    "the warning",
    () => Promise.resolve(stderr.includes("the client is not reading its answers")),
  );
  // The first request of the second lot found the backlog and ran; the other 9 wait unhandled
  // however long the client waits (without the pause they took some 50 ms).
  await waitUntil("the 21st answered", async () => await answered() >= 21);
  await new Promise((r) => setTimeout(r, 1000));
  assert.equal(await answered(), 21);

  // If reading never resumed, the loop below would wait for good: end the process instead.
  const guard = setTimeout(() => child.kill("SIGKILL"), 60_000);
  const ids = new Set<number>();
  for await (const frame of readFrames(child.stdout, 4 * ANSWER_CHARS)) {
    assert(frame.kind === "line", JSON.stringify(frame));
    const response = JSON.parse(frame.text);
    assert.equal(response.result?.result?.length, ANSWER_CHARS + 2, frame.text.slice(0, 300));
    ids.add(response.id);
    if (ids.size === 30) break;
  }
  clearTimeout(guard);
  assert.deepEqual([...ids].sort((a, b) => a - b), range(1, 30));
  await stdin.close();
  assert.equal((await child.status).code, 0, stderr);
  await stderrDone;
});
