/**
 * `--http` against clients that misbehave on purpose, through the real supervisor on loopback:
 * a burst of connections past `--http-max-connections`, batches of many thousand requests, clients
 * that never read their answers, a tenant that opens MCP sessions without end or reads another's
 * session ids, tokens that move between lines of the token file on a reload, a Host that makes no
 * URL; and SIGTERM with runs, event streams and slow clients open.
 */

import assert from "node:assert/strict";
import { HttpPool, rawExchange, readUntilClosed } from "./helpers/http_pool.ts";
import { waitUntil } from "./helpers/processes.ts";

Deno.test("HTTP abuse: a burst of connections at once does not pass --http-max-connections", async () => {
  const http = await HttpPool.start({
    args: ["--pool-size", "1", "--http-max-connections", "4", "--http-header-timeout", "30"],
  });
  try {
    // All at once: each is accepted before the relay of the one before is connected.
    const conns = await Promise.all(
      Array.from({ length: 64 }, () => Deno.connect({ hostname: "127.0.0.1", port: http.port })),
    );
    await new Promise((resolve) => setTimeout(resolve, 500));
    const request = "GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n";
    const answers = await Promise.all(conns.map(async (conn) => {
      await conn.write(new TextEncoder().encode(request)).catch(() => {});
      return (await readUntilClosed(conn, 10_000)).slice(0, 12);
    }));
    const served = answers.filter((answer) => answer === "HTTP/1.1 200").length;
    const refused = answers.filter((answer) => answer === "HTTP/1.1 503").length;
    assert.ok(served <= 4, `${served} of 64 connections served past a cap of 4`);
    assert.equal(served + refused, 64);
  } finally {
    assert.equal((await http.stop()).code, 0);
  }
});

Deno.test("HTTP abuse: a batch of 40,000 requests is answered in seconds, and others meanwhile", async () => {
  const http = await HttpPool.start({ args: ["--pool-size", "1", "--max-queue", "1"] });
  try {
    // Within --max-line-bytes (16 MiB): about 2.7 MB. One runs, one waits, the rest are refused.
    const batch = Array.from({ length: 40_000 }, (_, id) => ({
      jsonrpc: "2.0",
      id,
      method: "execute",
      params: { code: "1" },
    }));
    let slowest = 0;
    let done = false;
    // Meanwhile a probe asks /health: the supervisor's event loop must keep turning.
    const probe = (async () => {
      while (!done) {
        const started = performance.now();
        const response = await fetch(`${http.url}/health`);
        await response.body?.cancel();
        slowest = Math.max(slowest, performance.now() - started);
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    })();
    const started = performance.now();
    const response = await http.rpc(batch);
    const answers = await response.json();
    const took = performance.now() - started;
    done = true;
    await probe;
    assert.equal(answers.length, 40_000);
    // One runs and one waits at a time; the batch is taken 1000 requests a turn, so a request
    // that ends between two turns makes room for another: at least 2 run, every other one is
    // refused as the full queue (-32000), and each id is answered once.
    const ran = answers.filter((answer: { result?: unknown }) => answer.result).length;
    const refused = answers.filter((answer: { error?: { code: number } }) =>
      answer.error?.code === -32000
    ).length;
    assert.ok(ran >= 2, `${ran} ran`);
    assert.equal(ran + refused, 40_000);
    assert.equal(new Set(answers.map((answer: { id: number }) => answer.id)).size, 40_000);
    // It took over 20 s, with /health stalled as long, when each request of the batch added a
    // listener to one AbortSignal (quadratic).
    assert.ok(took < 10_000, `the batch took ${took.toFixed(0)} ms`);
    assert.ok(slowest < 5_000, `/health waited ${slowest.toFixed(0)} ms`);
  } finally {
    assert.equal((await http.stop()).code, 0);
  }
});

Deno.test("HTTP abuse: a batch whose answer passes the line limit is answered, streamed or not, and the pool lives", async () => {
  const http = await HttpPool.start({ args: ["--pool-size", "1"] });
  try {
    // 200,000 unknown methods: a body of 9 MB, within --max-line-bytes (16 MiB), whose answer
    // (200,000 errors) is past it. Shrinking that answer spread 200,000 sizes as arguments:
    // a RangeError, a 500, and with events an unhandled rejection that stopped the supervisor.
    const unknown = Array.from({ length: 200_000 }, (_, id) => ({
      jsonrpc: "2.0",
      id,
      method: "nope",
    }));
    const plain = await http.rpc(unknown);
    assert.equal(plain.status, 200);
    assert.equal((await plain.json()).length, 200_000);

    const streamed = await http.rpc(
      [
        {
          jsonrpc: "2.0",
          id: "s",
          method: "execute",
          params: { code: "print('hi')", stream: true },
        },
        ...unknown,
      ],
      undefined,
      { accept: "text/event-stream" },
    );
    assert.equal(streamed.status, 200);
    const text = await streamed.text();
    assert.match(text, /"method":"output"/);
    assert.match(text, /"id":199999,"error":\{"code":-32601/);
    const health = await fetch(`${http.url}/health`);
    assert.equal(health.status, 200);
    await health.body?.cancel();
  } finally {
    assert.equal((await http.stop()).code, 0);
  }
});

Deno.test("HTTP abuse: a client that does not read its answers is closed at --http-send-timeout", async () => {
  const http = await HttpPool.start({
    args: ["--pool-size", "1", "--http-send-timeout", "1", "--http-header-timeout", "3"],
    env: { PYODIDE_LOG_LEVEL: "debug" },
  });
  try {
    // An answer of 12 MB (a session's state), asked for on connections that never read: the
    // supervisor held each whole answer, for as long as the client kept its connection.
    const body = JSON.stringify({
      jsonrpc: "2.0",
      id: 1,
      method: "execute",
      params: { code: "import os\nx = os.urandom(9_000_000)", return_session: true },
    });
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: http.port });
    await conn.write(new TextEncoder().encode(
      "POST /rpc HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n" +
        `content-length: ${body.length}\r\n\r\n${body}`,
    ));
    await new Promise((resolve) => setTimeout(resolve, 5000));
    // What reached this side before the close, then the close (it used to deliver the whole
    // answer, and close only at the header deadline after it).
    const received = await readUntilClosed(conn, 10_000);
    assert.match(received, /^HTTP\/1\.1 200 OK\r\n/);
    assert.ok(received.length < 12_000_000, `the whole answer came: ${received.length} chars`);
    assert.match(
      http.supervisor.stderr,
      /closing 127\.0\.0\.1:\d+: it took no bytes of its answer/,
    );
    // Others are served.
    assert.equal((await http.execute({ code: "1 + 1" })).result?.result, "2");
  } finally {
    assert.equal((await http.stop()).code, 0);
  }
});

Deno.test("HTTP abuse: a tenant that opens MCP sessions without end closes its own, not another's", async () => {
  const alice = "alice-token-0123456789abcdef";
  const bob = "bob-token-0123456789abcdef00";
  const tokens = await Deno.makeTempFile({ suffix: ".tokens" });
  await Deno.writeTextFile(tokens, `alice:${alice}\nbob:${bob}\n`);
  const http = await HttpPool.start({ args: ["--pool-size", "1", "--http-token-file", tokens] });
  const headers = (token: string, session?: string) => ({
    authorization: `Bearer ${token}`,
    "content-type": "application/json",
    accept: "application/json, text/event-stream",
    ...(session ? { "mcp-session-id": session, "mcp-protocol-version": "2025-06-18" } : {}),
  });
  const initialize = async (token: string) => {
    const response = await fetch(`${http.url}/mcp`, {
      method: "POST",
      headers: headers(token),
      body: JSON.stringify({
        jsonrpc: "2.0",
        id: 1,
        method: "initialize",
        params: {
          protocolVersion: "2025-06-18",
          capabilities: {},
          clientInfo: { name: "raw", version: "1" },
        },
      }),
    });
    await response.body?.cancel();
    assert.equal(response.status, 200);
    return response.headers.get("mcp-session-id")!;
  };
  const listTools = async (token: string, session: string) => {
    const response = await fetch(`${http.url}/mcp`, {
      method: "POST",
      headers: headers(token, session),
      body: JSON.stringify({ jsonrpc: "2.0", id: 2, method: "tools/list" }),
    });
    await response.body?.cancel();
    return response.status;
  };
  try {
    const alices = await initialize(alice);
    const bobsFirst = await initialize(bob);
    // Bob opens as many as the service holds (1000), and one more.
    for (let i = 0; i < 1000; i++) await initialize(bob);
    assert.equal(await listTools(alice, alices), 200, "bob's sessions closed alice's");
    assert.equal(await listTools(bob, bobsFirst), 404);
  } finally {
    assert.equal((await http.stop()).code, 0);
  }
});

Deno.test("HTTP abuse: after a reload moves a token to another's line, it cannot use the other's MCP session", async () => {
  const alice = "alice-token-0123456789abcdef";
  const bob = "bob-token-0123456789abcdef00";
  const tokens = await Deno.makeTempFile({ suffix: ".tokens" });
  await Deno.writeTextFile(tokens, `alice:${alice}\nbob:${bob}\n`);
  const http = await HttpPool.start({ args: ["--pool-size", "1", "--http-token-file", tokens] });
  const headers = (token: string, session?: string) => ({
    authorization: `Bearer ${token}`,
    "content-type": "application/json",
    accept: "application/json, text/event-stream",
    ...(session ? { "mcp-session-id": session, "mcp-protocol-version": "2025-06-18" } : {}),
  });
  try {
    const state = await http.execute({ code: "secret = 'alice only'", session_id: "a1" }, alice);
    assert.equal(state.result?.status, "ok");
    const init = await fetch(`${http.url}/mcp`, {
      method: "POST",
      headers: headers(alice),
      body: JSON.stringify({
        jsonrpc: "2.0",
        id: 1,
        method: "initialize",
        params: {
          protocolVersion: "2025-06-18",
          capabilities: {},
          clientInfo: { name: "raw", version: "1" },
        },
      }),
    });
    await init.body?.cancel();
    const session = init.headers.get("mcp-session-id")!;
    // Alice's token is revoked: bob's is now on line 1, where alice's was.
    await Deno.writeTextFile(tokens, `bob:${bob}\n`);
    http.supervisor.process.kill("SIGHUP");
    await waitUntil(
      "the reload",
      () => Promise.resolve(http.supervisor.stderr.includes("HTTP tokens reloaded")),
      5_000,
    );
    // Bob, with alice's MCP session (its id leaked): it ran as alice, with her state.
    const call = await fetch(`${http.url}/mcp`, {
      method: "POST",
      headers: headers(bob, session),
      body: JSON.stringify({
        jsonrpc: "2.0",
        id: 2,
        method: "tools/call",
        params: { name: "run_python", arguments: { code: "secret", session_id: "a1" } },
      }),
    });
    const text = await call.text();
    assert.equal(call.status, 404, text);
    assert.ok(!text.includes("alice only"));
  } finally {
    assert.equal((await http.stop()).code, 0);
  }
});

Deno.test("HTTP abuse: a named token sees its own session ids in health, never another tenant's", async () => {
  const alice = "alice-token-0123456789abcdef";
  const bob = "bob-token-0123456789abcdef00";
  const plain = "plain-token-0123456789abcdef";
  const tokens = await Deno.makeTempFile({ suffix: ".tokens" });
  await Deno.writeTextFile(tokens, `alice:${alice}\nbob:${bob}\n${plain}\n`);
  const http = await HttpPool.start({ args: ["--pool-size", "1", "--http-token-file", tokens] });
  const sessionsSeen = async (token: string) => {
    const probe = await (await fetch(`${http.url}/health`, {
      headers: { authorization: `Bearer ${token}` },
    })).json();
    const method = await (await http.rpc({ jsonrpc: "2.0", id: 1, method: "health" }, token))
      .json();
    const ids = (report: { workers: { sessions: string[] }[] }) =>
      report.workers.flatMap((worker) => worker.sessions).sort();
    assert.deepEqual(ids(method.result), ids(probe));
    return ids(probe);
  };
  try {
    for (const [token, id] of [[alice, "alice-acquisition-plans"], [bob, "bob-1"]]) {
      assert.equal((await http.execute({ code: "1", session_id: id }, token)).result?.status, "ok");
    }
    assert.deepEqual(await sessionsSeen(alice), ["alice-acquisition-plans"]);
    assert.deepEqual(await sessionsSeen(bob), ["bob-1"]);
    // An unnamed token may run as any tenant: it sees them all.
    assert.deepEqual(await sessionsSeen(plain), ["alice-acquisition-plans", "bob-1"]);
  } finally {
    assert.equal((await http.stop()).code, 0);
  }
});

Deno.test("HTTP abuse: a Host header that makes no URL is a 400, not a 500 logged as an error", async () => {
  const http = await HttpPool.start({ args: ["--pool-size", "1"] });
  try {
    for (const host of ["a b", "[", "%", "127.0.0.1:99999"]) {
      const answer = await rawExchange(
        http.port,
        `GET /health HTTP/1.1\r\nhost: ${host}\r\nconnection: close\r\n\r\n`,
      );
      assert.match(answer, /^HTTP\/1\.1 400 /, host);
    }
    assert.doesNotMatch(http.supervisor.stderr, /\[ERR\]/);
  } finally {
    assert.equal((await http.stop()).code, 0);
  }
});

Deno.test("HTTP shutdown: SIGTERM answers every request it took, running ones too, before the exit", async () => {
  const http = await HttpPool.start({ args: ["--pool-size", "3", "--shutdown-grace", "2"] });
  const mcpHeaders = (session?: string) => ({
    "content-type": "application/json",
    accept: "application/json, text/event-stream",
    ...(session ? { "mcp-session-id": session, "mcp-protocol-version": "2025-06-18" } : {}),
  });
  const init = await fetch(`${http.url}/mcp`, {
    method: "POST",
    headers: mcpHeaders(),
    body: JSON.stringify({
      jsonrpc: "2.0",
      id: 1,
      method: "initialize",
      params: {
        protocolVersion: "2025-06-18",
        capabilities: {},
        clientInfo: { name: "raw", version: "1" },
      },
    }),
  });
  await init.body?.cancel();
  const session = init.headers.get("mcp-session-id")!;
  const slowly = "import time\nfor i in range(300):\n    print(i)\n    time.sleep(0.1)";
  const running = (accept?: string) =>
    fetch(`${http.url}/rpc`, {
      method: "POST",
      headers: { "content-type": "application/json", ...(accept ? { accept } : {}) },
      body: JSON.stringify({
        jsonrpc: "2.0",
        id: 1,
        method: "execute",
        params: { code: slowly, stream: true },
      }),
    }).then((response) => response.text()).catch((error) => `failed: ${error}`);
  const plain = running();
  const events = running("text/event-stream");
  const tool = fetch(`${http.url}/mcp`, {
    method: "POST",
    headers: mcpHeaders(session),
    body: JSON.stringify({
      jsonrpc: "2.0",
      id: 2,
      method: "tools/call",
      params: { name: "run_python", arguments: { code: slowly } },
    }),
  }).then((response) => response.text()).catch((error) => `failed: ${error}`);
  // And a client that trickles its headers.
  const slowloris = await Deno.connect({ hostname: "127.0.0.1", port: http.port });
  await slowloris.write(new TextEncoder().encode("POST /rpc HTTP/1.1\r\nhost: 127.0.0.1\r\n"));
  await waitUntil("three runs", async () => {
    const health = await http.supervisor.health();
    return health.workers.filter((worker) => worker.state === "busy").length === 3;
  }, 10_000);
  const started = performance.now();
  http.supervisor.process.kill("SIGTERM");
  const status = await http.supervisor.close();
  const took = performance.now() - started;
  assert.equal(status.code, 0);
  assert.ok(took < 2000 + 5000 + 2000, `the stop took ${took.toFixed(0)} ms`);
  // The runs were stopped at the grace's end, and said so; those answers were lost when the
  // process exited before the gate relayed them.
  const stopped = /the pool shut down before the request finished/;
  assert.match(await plain, stopped);
  assert.match(await events, stopped);
  assert.match(await tool, stopped);
  slowloris.close();
});

Deno.test("HTTP abuse: with --allow-shutdown, a tenant's token cannot stop the shared pool; an unnamed one can", async () => {
  const alice = "alice-token-0123456789abcdef";
  const admin = "admin-token-0123456789abcdef";
  const tokens = await Deno.makeTempFile({ suffix: ".tokens" });
  await Deno.writeTextFile(tokens, `alice:${alice}\n${admin}\n`);
  const http = await HttpPool.start({
    args: ["--pool-size", "1", "--allow-shutdown", "--http-token-file", tokens],
  });
  try {
    const shutdown = { jsonrpc: "2.0", id: 1, method: "shutdown" };
    const refused = await (await http.rpc(shutdown, alice)).json();
    assert.equal(refused.error?.code, -32601, JSON.stringify(refused));
    assert.equal(refused.error.data.tenant, "alice");
    assert.equal((await http.execute({ code: "1 + 1" }, alice)).result?.result, "2");
    const stopping = await (await http.rpc(shutdown, admin)).json();
    assert.deepEqual(stopping.result, { stopping: true });
    assert.equal((await http.supervisor.process.status).code, 0);
  } finally {
    await http.stop();
  }
});
