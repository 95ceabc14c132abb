/**
 * `--http`: JSON-RPC over HTTP against the real supervisor on loopback. Requests, batches,
 * server-sent events in order, cancel on disconnect, tokens and tenants (401), the body limit
 * (413), the full queue (503), keep-alive and one request per connection, 200 concurrent
 * clients, and the start refused on a public address without tokens.
 */

import assert from "node:assert/strict";
import { HttpPool, parseEvents, rawExchange } from "./helpers/http_pool.ts";
import { supervisorCommand } from "./helpers/supervisor_process.ts";
import { waitUntil } from "./helpers/processes.ts";

const ALICE = "alice-token-0123456789abcdef";
const PLAIN = "plain-token-0123456789abcdef";

let tokensPath = "";
async function tokenFile(): Promise<string> {
  tokensPath = await Deno.makeTempFile({ suffix: ".tokens" });
  await Deno.writeTextFile(tokensPath, `# test tokens\nalice:${ALICE}\n${PLAIN}\n`);
  return tokensPath;
}

let shared: Promise<HttpPool> | undefined;
/** A pool of 2 with tokens, a queue long enough for 200 clients, and a 64 KiB line limit. */
function pool(): Promise<HttpPool> {
  shared ??= (async () =>
    await HttpPool.start({
      args: [
        "--pool-size",
        "2",
        "--max-queue",
        "300",
        "--max-line-bytes",
        "65536",
        "--max-output-bytes",
        "16384",
        "--http-token-file",
        await tokenFile(),
      ],
    }))();
  return shared;
}

Deno.test({
  name: "HTTP: execute over POST /rpc, with keep-alive and with one request per connection",
  fn: async () => {
    const http = await pool();
    const first = await http.execute({ code: "print('hi')\n6 * 7" }, PLAIN);
    assert.equal(first.id, 1);
    assert.equal(first.result?.status, "ok");
    assert.equal(first.result?.result, "42");
    assert.equal(first.result?.stdout, "hi\n");
    // fetch keeps its connection; these reuse it.
    for (let i = 0; i < 5; i++) {
      assert.equal((await http.execute({ code: `${i} + 1` }, PLAIN, i)).result?.result, `${i + 1}`);
    }
    // A raw HTTP/1.1 client: two requests on one connection, then Connection: close.
    const body = JSON.stringify({
      jsonrpc: "2.0",
      id: "k",
      method: "execute",
      params: { code: "7" },
    });
    const request = (close: boolean) =>
      `POST /rpc HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n` +
      `authorization: Bearer ${PLAIN}\r\ncontent-length: ${body.length}\r\n` +
      `${close ? "connection: close\r\n" : ""}\r\n${body}`;
    const text = await rawExchange(http.port, request(false) + request(true));
    const answers = text.split("HTTP/1.1 200 OK").slice(1);
    assert.equal(answers.length, 2, text);
    for (const answer of answers) {
      assert.match(answer, /"id":"k","result":\{"status":"ok","result":"7"/);
    }
    // HTTP/1.0 without keep-alive: one request, and the server closes.
    const once = await rawExchange(
      http.port,
      request(false).replace("HTTP/1.1", "HTTP/1.0"),
    );
    assert.match(once, /^HTTP\/1\.0 200 OK/);
  },
});

Deno.test("HTTP: a batch is answered as one array; notifications get nothing", async () => {
  const http = await pool();
  const response = await http.rpc([
    { jsonrpc: "2.0", id: "a", method: "execute", params: { code: "1 + 1" } },
    { jsonrpc: "2.0", method: "execute", params: { code: "2" } },
    { jsonrpc: "2.0", id: "b", method: "nope" },
    { jsonrpc: "2.0", id: "c", method: "health" },
  ], PLAIN);
  assert.equal(response.status, 200);
  const answers = await response.json() as {
    id: string;
    result?: unknown;
    error?: { code: number };
  }[];
  assert.deepEqual(answers.map((a) => a.id).sort(), ["a", "b", "c"]);
  const byId = Object.fromEntries(answers.map((a) => [a.id, a]));
  assert.equal((byId.a.result as { result: string }).result, "2");
  assert.equal(byId.b.error?.code, -32601);
  assert.equal((byId.c.result as { status: string }).status, "ok");
  // Only notifications: 204, no body.
  const none = await http.rpc({ jsonrpc: "2.0", method: "execute", params: { code: "3" } }, PLAIN);
  assert.equal(none.status, 204);
  assert.equal(await none.text(), "");
  // Not JSON: the JSON-RPC parse error, as on stdin.
  const bad = await http.rpc("{nope", PLAIN);
  assert.equal(bad.status, 200);
  assert.equal((await bad.json()).error.code, -32700);
});

Deno.test("HTTP: with Accept: text/event-stream, output streams ahead of the result", async () => {
  const http = await pool();
  const code =
    "import time\nfor i in range(3):\n    print(i, flush=True)\n    time.sleep(0.1)\n'end'";
  const started = performance.now();
  const response = await http.rpc(
    { jsonrpc: "2.0", id: 9, method: "execute", params: { code, stream: true } },
    PLAIN,
    { accept: "text/event-stream" },
  );
  assert.equal(response.status, 200);
  assert.equal(response.headers.get("content-type"), "text/event-stream");
  // The first event arrives while the code still runs.
  const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
  const firstChunk = (await reader.read()).value!;
  assert.ok(
    performance.now() - started < 250,
    `first event after ${performance.now() - started} ms`,
  );
  let text = firstChunk;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    text += value;
  }
  const events = parseEvents(text) as {
    method?: string;
    params?: { text: string };
    id?: number;
    result?: { result: string; stdout: string };
  }[];
  assert.deepEqual(
    events.map((e) => e.method ?? "answer"),
    ["output", "output", "output", "answer"],
  );
  assert.deepEqual(events.slice(0, 3).map((e) => e.params?.text), ["0\n", "1\n", "2\n"]);
  assert.equal(events[3].id, 9);
  assert.equal(events[3].result?.result, "'end'");
  assert.equal(events[3].result?.stdout, "0\n1\n2\n");
  // Without output, the answer is still one event.
  const quiet = await http.rpc(
    { jsonrpc: "2.0", id: 10, method: "execute", params: { code: "5" } },
    PLAIN,
    { accept: "text/event-stream" },
  );
  assert.deepEqual(
    parseEvents(await quiet.text()).map((e) => (e as { result: { result: string } }).result.result),
    ["5"],
  );
});

Deno.test("HTTP: a client that disconnects cancels its running request, and only its own", async () => {
  const http = await pool();
  const cancelled = async () => (await http.supervisor.stats()).requests.cancelled ?? 0;
  const before = await cancelled();
  // Two clients, each with id 1 (ids are per HTTP request): only the one that goes is cancelled.
  const longRun = (signal: AbortSignal) =>
    fetch(`${http.url}/rpc`, {
      method: "POST",
      signal,
      headers: { "content-type": "application/json", authorization: `Bearer ${PLAIN}` },
      body: JSON.stringify({
        jsonrpc: "2.0",
        id: 1,
        method: "execute",
        params: { code: "while True: pass", timeout_ms: 60_000 },
      }),
    }).catch((error: Error) => error);
  const first = new AbortController();
  const second = new AbortController();
  const runs = [longRun(first.signal), longRun(second.signal)];
  const busy = async () =>
    (await http.supervisor.health()).workers.filter((w) => w.state === "busy").length;
  await waitUntil("both workers busy", async () => await busy() === 2, 10_000);
  first.abort();
  await waitUntil(
    "the first request cancelled",
    async () => await cancelled() === before + 1,
    5_000,
  );
  await waitUntil("its worker free", async () => await busy() === 1, 5_000);
  // The other client's run goes on.
  await new Promise((resolve) => setTimeout(resolve, 300));
  assert.equal(await busy(), 1);
  assert.equal(await cancelled(), before + 1);
  second.abort();
  await waitUntil(
    "the second request cancelled",
    async () => await cancelled() === before + 2,
    5_000,
  );
  for (const run of runs) assert.equal(((await run) as Error).name, "AbortError");
  await waitUntil("both workers free", async () => await busy() === 0, 5_000);
});

Deno.test("HTTP: tokens: 401 without one or with a wrong one; a named token fixes the tenant", async () => {
  const http = await pool();
  const call = { jsonrpc: "2.0", id: 1, method: "execute", params: { code: "1" } };
  for (const token of [undefined, "wrong-token-0123456789abcdef", `${PLAIN}x`]) {
    const response = await http.rpc(call, token);
    assert.equal(response.status, 401);
    assert.equal(response.headers.get("www-authenticate"), 'Bearer realm="pyodide-pool"');
    const body = await response.json();
    assert.equal(body.error.code, -32600);
    assert.match(body.error.message, /a valid bearer token is needed/);
  }
  assert.equal((await http.execute({ code: "1" }, ALICE)).result?.status, "ok");
  // Alice's token runs her requests as tenant alice: naming another is refused.
  const other = await http.execute({ code: "1", tenant: "bob" }, ALICE);
  assert.equal(other.error?.code, -32602);
  assert.equal(other.error?.data?.field, "tenant");
  assert.equal((await http.execute({ code: "1", tenant: "alice" }, ALICE)).result?.status, "ok");
  // Her session is hers: the unnamed token cannot use it, even naming her.
  assert.equal(
    (await http.execute({ code: "n = 1", session_id: "alice-s" }, ALICE)).result?.status,
    "ok",
  );
  const stolen = await http.execute({ code: "n", session_id: "alice-s" }, PLAIN);
  assert.equal(stolen.error?.code, -32602);
  assert.match(stolen.error!.message, /does not own session/);
  assert.equal(
    (await http.execute({ code: "n", session_id: "alice-s" }, ALICE)).result?.result,
    "1",
  );
  // The token is never logged.
  assert.ok(!http.supervisor.stderr.includes(ALICE));
  assert.ok(!http.supervisor.stderr.includes(PLAIN));
});

Deno.test("HTTP: a body past --max-line-bytes is refused with 413", async () => {
  const http = await pool();
  const code = `x = "${"a".repeat(70_000)}"`;
  const response = await http.rpc(
    { jsonrpc: "2.0", id: 1, method: "execute", params: { code } },
    PLAIN,
  );
  assert.equal(response.status, 413);
  const body = await response.json();
  assert.equal(body.error.code, -32600);
  assert.equal(body.error.data.max_line_bytes, 65536);
  // A body sent in chunks, with no length given, is stopped as it passes the limit.
  const chunks = ReadableStream.from([
    new TextEncoder().encode(
      `{"jsonrpc":"2.0","id":1,"method":"execute","params":{"code":"${"b".repeat(40_000)}`,
    ),
    new TextEncoder().encode(`${"b".repeat(40_000)}"}}`),
  ]);
  const streamed = await fetch(`${http.url}/rpc`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${PLAIN}` },
    body: chunks,
  });
  assert.equal(streamed.status, 413);
  await streamed.body?.cancel();
  // Other content types are refused (a web page's form could post them without CORS).
  const form = await http.rpc("{}", PLAIN, { "content-type": "text/plain" });
  assert.equal(form.status, 415);
  await form.body?.cancel();
  // And the pool still serves.
  assert.equal((await http.execute({ code: "2" }, PLAIN)).result?.result, "2");
});

Deno.test("HTTP: 200 concurrent clients, each on its own connection, all answered", async () => {
  const http = await pool();
  const clients = Array.from({ length: 200 }, async (_, i) => {
    // A client of its own each: no connection shared.
    const client = Deno.createHttpClient({ poolMaxIdlePerHost: 0 });
    try {
      const response = await fetch(`${http.url}/rpc`, {
        method: "POST",
        client,
        headers: { "content-type": "application/json", authorization: `Bearer ${PLAIN}` },
        body: JSON.stringify({
          jsonrpc: "2.0",
          id: i,
          method: "execute",
          params: { code: `${i} * 2` },
        }),
      });
      assert.equal(response.status, 200);
      return await response.json();
    } finally {
      client.close();
    }
  });
  const answers = await Promise.all(clients);
  assert.equal(answers.length, 200);
  answers.forEach((answer, i) => {
    assert.equal(answer.id, i);
    assert.equal(answer.result.result, String(i * 2));
  });
});

Deno.test("HTTP: a full queue answers 503 with Retry-After; stdio beside HTTP; SIGTERM stops it", async () => {
  const http = await HttpPool.start({ args: ["--pool-size", "1", "--max-queue", "1"] });
  try {
    const controller = new AbortController();
    // One runs, one waits: the queue is full.
    const sleeps = [1, 2].map((id) =>
      fetch(`${http.url}/rpc`, {
        method: "POST",
        signal: controller.signal,
        headers: { "content-type": "application/json" },
        body: JSON.stringify({
          jsonrpc: "2.0",
          id,
          method: "execute",
          params: { code: "import time\ntime.sleep(30)" },
        }),
      }).catch((error: Error) => error)
    );
    await waitUntil("one running, one queued", async () => {
      const health = await http.supervisor.health();
      return health.workers[0].state === "busy" && health.queue_depth === 1;
    }, 10_000);
    const response = await http.rpc({
      jsonrpc: "2.0",
      id: 3,
      method: "execute",
      params: { code: "1" },
    });
    assert.equal(response.status, 503);
    assert.equal(response.headers.get("retry-after"), "1");
    const body = await response.json();
    assert.equal(body.id, 3);
    assert.equal(body.error.code, -32000);
    assert.equal(body.error.data.max_queue, 1);
    // Asked as events, the refusal is the same 503.
    const streamed = await http.rpc(
      { jsonrpc: "2.0", id: 4, method: "execute", params: { code: "1", stream: true } },
      undefined,
      { accept: "text/event-stream" },
    );
    assert.equal(streamed.status, 503);
    assert.equal((await streamed.json()).error.code, -32000);
    controller.abort();
    await Promise.all(sleeps);
    // Without a token file on loopback, a Host that is not loopback is refused (DNS rebinding).
    const rebound = await rawExchange(
      http.port,
      "GET /health HTTP/1.1\r\nhost: evil.example:80\r\nconnection: close\r\n\r\n",
    );
    assert.match(rebound, /^HTTP\/1\.1 421 /);

    // stdio works beside HTTP; its end ends the stdio client only, and SIGTERM stops the pool.
    assert.equal((await http.supervisor.execute({ code: "'stdio'" })).result, "'stdio'");
    await http.supervisor.closeInput();
    await new Promise((resolve) => setTimeout(resolve, 500));
    assert.equal((await http.execute({ code: "'still here'" })).result?.result, "'still here'");
    assert.match(http.supervisor.stderr, /stdin closed; serving HTTP on http:\/\/127\.0\.0\.1:\d+/);
  } finally {
    assert.equal((await http.stop()).code, 0);
  }
});

Deno.test("HTTP: a public address without a token file refuses to start (exit 2)", async () => {
  const [command, args] = supervisorCommand(["--http", "0.0.0.0:0"]);
  const { code, stderr } = await new Deno.Command(command, {
    args,
    stdout: "null",
    stderr: "piped",
  })
    .output();
  assert.equal(code, 2);
  assert.match(
    new TextDecoder().decode(stderr),
    /refusing to serve HTTP on 0\.0\.0\.0:0 without --http-token-file/,
  );
});

Deno.test("HTTP: SIGHUP reads the token file again; a bad one leaves the old tokens", async () => {
  const http = await pool();
  const fresh = "fresh-token-0123456789abcdef";
  const reloads = () => http.supervisor.stderr.match(/HTTP tokens (not )?reloaded/g)?.length ?? 0;
  const status = async (token: string) => {
    const response = await http.rpc({ jsonrpc: "2.0", id: 1, method: "health" }, token);
    await response.body?.cancel();
    return response.status;
  };
  await Deno.writeTextFile(tokensPath, `alice:${ALICE}\n${fresh}\n`);
  http.supervisor.process.kill("SIGHUP");
  await waitUntil("the reload", () => Promise.resolve(reloads() === 1), 5_000);
  assert.equal(await status(fresh), 200);
  assert.equal(await status(PLAIN), 401);
  assert.equal(await status(ALICE), 200);
  // A file that cannot be used: said on stderr (without the tokens), and the old ones stay.
  await Deno.writeTextFile(tokensPath, `short\n`);
  http.supervisor.process.kill("SIGHUP");
  await waitUntil("the failed reload", () => Promise.resolve(reloads() === 2), 5_000);
  assert.match(http.supervisor.stderr, /HTTP tokens not reloaded, the old ones stay: .*line 1/);
  assert.equal(await status(fresh), 200);
  assert.ok(!http.supervisor.stderr.includes(fresh));
});

Deno.test({
  name: "HTTP: stop the shared pool",
  fn: async () => {
    if (shared) assert.equal((await (await shared).stop()).code, 0);
  },
});
