/** Reading the supervisor's `--metrics-port` endpoint in tests. */

/** Parses Prometheus text into `name{labels}` -> value. */
export function parseMetrics(text: string): Map<string, number> {
  const values = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const at = line.lastIndexOf(" ");
    values.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return values;
}

/** The port in the line a supervisor started with `--metrics-port 0` logs (at info level). */
export function metricsPortIn(stderr: string): string | undefined {
  return stderr.match(/metrics on http:\/\/127\.0\.0\.1:(\d+)\/metrics/)?.[1];
}

/** One scrape of `/metrics` on 127.0.0.1:`port`. */
export async function scrapeMetrics(port: string): Promise<Map<string, number>> {
  const response = await fetch(`http://127.0.0.1:${port}/metrics`);
  if (response.status !== 200) throw new Error(`/metrics answered ${response.status}`);
  return parseMetrics(await response.text());
}
