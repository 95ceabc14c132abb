/**
 * A real headless Chromium for tests: the system's (Debian's `chromium`, which .ci/run installs),
 * started here and driven over the DevTools protocol with playwright-core. Nothing is downloaded:
 * no browser build is reachable from here. When the browser cannot start, `launchBrowser`
 * throws an error that says why and how to install it, so a test fails rather than skips.
 *
 * @module
 */

import { type Browser, chromium } from "playwright-core";

/** Where Chromium is looked for, first found wins (PYODIDE_POOL_CHROMIUM overrides). */
const CANDIDATES = ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"];

export interface RunningBrowser {
  browser: Browser;
  close(): Promise<void>;
}

function executable(): string {
  const chosen = Deno.env.get("PYODIDE_POOL_CHROMIUM");
  if (chosen) return chosen;
  for (const path of CANDIDATES) {
    try {
      if (Deno.statSync(path).isFile) return path;
    } catch { /* not there */ }
  }
  throw new Error(
    `no Chromium found (looked for ${CANDIDATES.join(", ")}): install it with ` +
      "`apt-get update && apt-get install -y chromium` (.ci/run does), or set PYODIDE_POOL_CHROMIUM",
  );
}

/**
 * Starts headless Chromium with a fresh profile and connects to it. `--no-sandbox`: the tests
 * run as root, where Chromium's own sandbox refuses to start.
 */
export async function launchBrowser(): Promise<RunningBrowser> {
  const path = executable();
  const profile = await Deno.makeTempDir({ prefix: "pyodide-pool-chromium-" });
  const process = new Deno.Command(path, {
    args: [
      "--headless=new",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-dev-shm-usage",
      "--no-first-run",
      "--no-default-browser-check",
      "--remote-debugging-address=127.0.0.1",
      "--remote-debugging-port=0",
      `--user-data-dir=${profile}`,
      "about:blank",
    ],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  let log = "";
  const decoder = new TextDecoder();
  const reader = process.stderr.getReader();
  const endpoint = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`Chromium (${path}) did not start within 30 s; its log:\n${log}`)),
      30_000,
    );
    (async () => {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        log += decoder.decode(value, { stream: true });
        const match = log.match(/DevTools listening on (ws:\/\/\S+)/);
        if (match) {
          clearTimeout(timer);
          return resolve(match[1]);
        }
      }
      clearTimeout(timer);
      reject(new Error(`Chromium (${path}) exited before it listened; its log:\n${log}`));
    })();
  });
  // Keep draining its log, so that it never blocks on a full pipe.
  (async () => {
    while (!(await reader.read()).done) { /* discard */ }
  })().catch(() => {});
  const browser = await chromium.connectOverCDP(endpoint);
  return {
    browser,
    close: async () => {
      await browser.close().catch(() => {});
      try {
        process.kill("SIGKILL");
      } catch { /* gone */ }
      await process.status;
      await Deno.remove(profile, { recursive: true }).catch(() => {});
    },
  };
}
