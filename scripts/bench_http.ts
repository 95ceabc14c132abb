/**
 * The HTTP service against stdio, on one pool of 2 workers (`--http`): the p50 and p99 of a
 * trivial `execute` one at a time over HTTP keep-alive and over stdio (interleaved in rounds,
 * so that both see the same machine), and requests per second with 32 concurrent HTTP clients,
 * each on its own keep-alive connection, beside 32 in flight on stdio. `deno task bench` runs
 * it; alone:
 *
 *     deno run --allow-read --allow-env --allow-run --allow-sys --allow-net=127.0.0.1 scripts/bench_http.ts
 *
 * @module
 */

import { Int32Histogram } from "../supervisor/stats.ts";
import { HttpPool } from "../tests/helpers/http_pool.ts";

const TRIVIAL = { code: "x = 1 + 1" };

export interface HttpBenchOptions {
  /** Sequential requests per transport. */
  requests: number;
  /** Requests in each throughput run. */
  throughputRequests: number;
  progress: (message: string) => void;
}

export interface LatencyFigures {
  count: number;
  p50_ms: number;
  p90_ms: number;
  p99_ms: number;
}

export interface HttpBenchReport {
  stdio: LatencyFigures;
  http_keep_alive: LatencyFigures;
  http_clients: number;
  http_requests_per_second: number;
  stdio_in_flight_requests_per_second: number;
}

function figures(h: InstanceType<typeof Int32Histogram>): LatencyFigures {
  const ms = (p: number) => h.getValueAtPercentile(p) / 1000;
  return { count: h.totalCount, p50_ms: ms(50), p90_ms: ms(90), p99_ms: ms(99) };
}

/** One `execute` over HTTP on `client`'s connection; throws unless it ran. */
async function httpExecute(url: string, client: Deno.HttpClient, id: number): Promise<void> {
  const response = await fetch(`${url}/rpc`, {
    method: "POST",
    client,
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ jsonrpc: "2.0", id, method: "execute", params: TRIVIAL }),
  });
  const answer = await response.json();
  if (answer.result?.status !== "ok") {
    throw new Error(`unexpected answer ${JSON.stringify(answer)}`);
  }
}

export async function httpVersusStdio(options: HttpBenchOptions): Promise<HttpBenchReport> {
  options.progress("HTTP and stdio on one pool of 2 workers");
  const http = await HttpPool.start({
    args: ["--pool-size", "2", "--worker-request-limit", "100000", "--max-queue", "1000"],
    env: { PYODIDE_LOG_LEVEL: "info" },
  });
  const client = Deno.createHttpClient({});
  try {
    for (let i = 0; i < 200; i++) {
      await http.supervisor.execute(TRIVIAL);
      await httpExecute(http.url, client, i);
    }
    const stdio = new Int32Histogram(1, 600_000_000, 3);
    const overHttp = new Int32Histogram(1, 600_000_000, 3);
    const rounds = 10;
    const perRound = Math.ceil(options.requests / rounds);
    for (let round = 0; round < rounds; round++) {
      for (let i = 0; i < perRound; i++) {
        const t0 = performance.now();
        const r = await http.supervisor.execute(TRIVIAL);
        stdio.recordValue(Math.round((performance.now() - t0) * 1000));
        if (r.status !== "ok") throw new Error(`unexpected result ${JSON.stringify(r)}`);
      }
      for (let i = 0; i < perRound; i++) {
        const t0 = performance.now();
        await httpExecute(http.url, client, i);
        overHttp.recordValue(Math.round((performance.now() - t0) * 1000));
      }
    }

    options.progress("HTTP throughput, 32 clients");
    const lanes = 32;
    const clients = Array.from({ length: lanes }, () => Deno.createHttpClient({}));
    let sent = 0;
    const t0 = performance.now();
    await Promise.all(clients.map(async (laneClient) => {
      while (sent < options.throughputRequests) await httpExecute(http.url, laneClient, sent++);
    }));
    const httpSeconds = (performance.now() - t0) / 1000;
    for (const c of clients) c.close();

    options.progress("stdio throughput, 32 in flight");
    sent = 0;
    const t1 = performance.now();
    await Promise.all(Array.from({ length: lanes }, async () => {
      while (sent < options.throughputRequests) {
        sent++;
        await http.supervisor.execute(TRIVIAL);
      }
    }));
    const stdioSeconds = (performance.now() - t1) / 1000;
    return {
      stdio: figures(stdio),
      http_keep_alive: figures(overHttp),
      http_clients: lanes,
      http_requests_per_second: options.throughputRequests / httpSeconds,
      stdio_in_flight_requests_per_second: options.throughputRequests / stdioSeconds,
    };
  } finally {
    client.close();
    await http.stop();
  }
}

if (import.meta.main) {
  const report = await httpVersusStdio({
    requests: 3000,
    throughputRequests: 10000,
    progress: (message) => console.error(`bench: ${message}`),
  });
  console.log(JSON.stringify(report, null, 2));
}
