/**
 * The status page (`GET /` with `--http`) in a real headless Chromium, against the real
 * supervisor: without a token it shows the workers and hides the rest; opened with a token it
 * shows the statistics and charts, and a run from its form shows the output, the result and a
 * figure. No console errors (Content-Security-Policy violations included). The screenshot is
 * kept in tests/artifacts/status_page.png (not committed: .gitignore).
 */

import assert from "node:assert/strict";
import type { Page } from "playwright-core";
import { launchBrowser } from "./helpers/browser.ts";
import { HttpPool } from "./helpers/http_pool.ts";
import { buildPackageDirectory } from "./helpers/packages.ts";
import { waitUntil } from "./helpers/processes.ts";

const TOKEN = "status-page-token-0123456789";
const ARTIFACTS = new URL("./artifacts/", import.meta.url);

Deno.test("status page: workers, charts, and a run from the form, in headless Chromium", async () => {
  const tokens = await Deno.makeTempFile({ suffix: ".tokens" });
  await Deno.writeTextFile(tokens, `ops:${TOKEN}\n`);
  const http = await HttpPool.start({
    args: [
      "--pool-size",
      "2",
      "--http-token-file",
      tokens,
      "--packages-dir",
      await buildPackageDirectory(),
    ],
  });
  const chromium = await launchBrowser();
  try {
    // Some traffic, so that the charts have bars.
    for (let i = 0; i < 5; i++) await http.execute({ code: `${i}` }, TOKEN);
    const problems: string[] = [];
    const watch = (page: Page) => {
      page.on("console", (message) => {
        if (message.type() === "error" || message.type() === "warning") {
          problems.push(`${message.type()}: ${message.text()}`);
        }
      });
      page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
    };
    let page = await chromium.browser.newPage({ viewport: { width: 1200, height: 1400 } });
    watch(page);

    // Without a token: the workers and the queue, no statistics, no form.
    await page.goto(`${http.url}/`);
    await page.waitForSelector("#workers tr[data-worker='w2']");
    assert.equal(await page.locator("#workers tr").count(), 2);
    assert.equal(await page.textContent("#status"), "ok");
    assert.equal(await page.isVisible("#auth"), true);
    assert.equal(await page.isVisible("#run"), false);
    assert.equal(await page.isVisible("#latency"), false);
    // Without a token the page does not even ask for more than /health: nothing failed.
    assert.deepEqual(problems, []);
    await page.close();

    // With the token in the address: everything, and the token leaves the address bar.
    page = await chromium.browser.newPage({ viewport: { width: 1200, height: 1400 } });
    watch(page);
    await page.goto(`${http.url}/#token=${TOKEN}`);
    await page.waitForSelector("#run:not(.hidden)");
    assert.equal(new URL(page.url()).hash, "");
    await waitUntil(
      "the statistics",
      async () => await page.textContent("#isolation") === "request",
    );
    assert.equal(await page.isVisible("#auth"), false);
    await page.waitForSelector("#chart-run rect[data-count]", { state: "attached" });
    const bars = await page.$$eval(
      "#chart-run rect[data-count]",
      (rects) => rects.map((r) => Number(r.getAttribute("data-count"))),
    );
    assert.ok(bars.reduce((a, b) => a + b, 0) >= 5, `run histogram: ${bars}`);

    // A run from the form: output streamed, then the result, and a figure.
    await page.fill(
      "#code",
      "import matplotlib.pyplot as plt\nprint('hello from the form')\nplt.figure(size=40)\n6 * 7",
    );
    await page.fill("#packages", "matplotlib");
    await page.click("#run-button");
    await waitUntil(
      "the run's answer",
      async () => (await page.textContent("#run-status"))?.startsWith("status: ok") ?? false,
    );
    assert.equal(await page.textContent("#stdout"), "hello from the form\n");
    assert.equal(await page.textContent("#result"), "42");
    const figure = await page.waitForSelector("#figures img");
    await waitUntil(
      "the figure decoded",
      async () =>
        await figure.evaluate((img) =>
          (img as unknown as { naturalWidth: number }).naturalWidth
        ) === 40,
    );
    assert.match((await figure.getAttribute("src"))!, /^data:image\/png;base64,iVBOR/);
    // Python's output is text, never markup.
    await page.fill("#code", "print('<img src=x onerror=alert(1)>')");
    await page.fill("#packages", "");
    await page.click("#run-button");
    await waitUntil(
      "the markup as text",
      async () => await page.textContent("#stdout") === "<img src=x onerror=alert(1)>\n",
    );
    assert.equal(await page.locator("#stdout img").count(), 0);

    await Deno.mkdir(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: new URL("status_page.png", ARTIFACTS).pathname, fullPage: true });
    assert.deepEqual(problems, []);
  } finally {
    await chromium.close();
    await http.stop();
  }
});
