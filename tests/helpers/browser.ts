/**
 * A real headless Chromium for tests: the system's (Debian's `chromium`, which .ci/run installs),
 * launched and driven over the DevTools protocol with puppeteer-core. Nothing is downloaded: no
 * browser build is reachable from here. When the browser cannot start, `launchBrowser` throws an
 * error that says why and how to install it, so that a test fails rather than skips.
 *
 * puppeteer-core rather than playwright-core: playwright-core reads
 * /proc/sys/fs/binfmt_misc/WSLInterop as it loads, which Deno allows only with --allow-all, and
 * the test task does not grant that.
 *
 * @module
 */

import puppeteer, { type Browser } from "puppeteer-core";

/** Where Chromium is looked for, first found wins (PYODIDE_POOL_CHROMIUM overrides). */
const CANDIDATES = ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"];

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
 * Starts headless Chromium with a fresh profile. `--no-sandbox`: the tests run as root, where
 * Chromium's own sandbox refuses to start.
 */
export async function launchBrowser(): Promise<Browser> {
  const path = executable();
  try {
    return await puppeteer.launch({
      executablePath: path,
      headless: true,
      // A WebSocket, not the default pipes on file descriptors 3 and 4.
      pipe: false,
      timeout: 30_000,
      args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"],
    });
  } catch (error) {
    throw new Error(
      `Chromium (${path}) could not start: ${(error as Error).message}\n` +
        "Install Debian's chromium (`apt-get update && apt-get install -y chromium`, as .ci/run " +
        "does), or point PYODIDE_POOL_CHROMIUM at a working Chromium",
    );
  }
}
