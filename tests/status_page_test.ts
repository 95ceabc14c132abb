/**
 * The status page (`GET /` with `--http`) in a real headless Chromium, against the real
 * supervisor: without a token it shows the workers and hides the rest; opened with a token it
 * shows the statistics and charts, and a run from its form shows the output, the result and a
 * figure. No console errors or warnings (Content-Security-Policy violations included). The
 * screenshot is kept in tests/artifacts/status_page.png (not committed: .gitignore).
 */

import assert from "node:assert/strict";
import type { Page } from "puppeteer-core";
import { launchBrowser } from "./helpers/browser.ts";
import { HttpPool } from "./helpers/http_pool.ts";
import { buildPackageDirectory } from "./helpers/packages.ts";
import { waitUntil } from "./helpers/processes.ts";

const TOKEN = "status-page-token-0123456789";
const ARTIFACTS = new URL("./artifacts/", import.meta.url);

const text = (page: Page, selector: string) => page.$eval(selector, (e) => e.textContent);
const hidden = (page: Page, selector: string) =>
  page.$eval(selector, (e) => e.classList.contains("hidden"));

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
  const browser = await launchBrowser();
  try {
    // Some traffic, so that the charts have bars.
    for (let i = 0; i < 5; i++) await http.execute({ code: `${i}` }, TOKEN);
    const problems: string[] = [];
    const open = async (url: string) => {
      const page = await browser.newPage();
      await page.setViewport({ width: 1200, height: 1400 });
      page.on("console", (message) => {
        if (message.type() === "error" || message.type() === "warn") {
          problems.push(`${message.type()}: ${message.text()}`);
        }
      });
      page.on("pageerror", (error) => problems.push(`page error: ${error}`));
      await page.goto(url);
      return page;
    };

    // Without a token: the workers and the queue, no statistics, no form.
    let page = await open(`${http.url}/`);
    await page.waitForSelector("#workers tr[data-worker='w2']");
    assert.equal((await page.$$("#workers tr")).length, 2);
    assert.equal(await text(page, "#status"), "ok");
    assert.equal(await hidden(page, "#auth"), false);
    assert.equal(await hidden(page, "#run"), true);
    assert.equal(await hidden(page, "#latency"), true);
    // Without a token the page asks for nothing but /health: nothing failed.
    assert.deepEqual(problems, []);
    await page.close();

    // With the token in the address: everything, and the token leaves the address bar.
    page = await open(`${http.url}/#token=${TOKEN}`);
    await page.waitForSelector("#run:not(.hidden)");
    assert.equal(new URL(page.url()).hash, "");
    await waitUntil("the statistics", async () => await text(page, "#isolation") === "request");
    assert.equal(await hidden(page, "#auth"), true);
    await waitUntil("bars in the run histogram", async () => {
      const bars = await page.$$eval(
        "#chart-run rect[data-count]",
        (rects) => rects.map((r) => Number(r.getAttribute("data-count"))),
      );
      return bars.reduce((a, b) => a + b, 0) >= 5;
    });

    // A run from the form: output streamed, then the result, and a figure.
    await page.locator("#code").fill(
      "import matplotlib.pyplot as plt\nprint('hello from the form')\nplt.figure(size=40)\n6 * 7",
    );
    await page.locator("#packages").fill("matplotlib");
    await page.click("#run-button");
    await waitUntil(
      "the run's answer",
      async () => (await text(page, "#run-status"))?.startsWith("status: ok") ?? false,
    );
    assert.equal(await text(page, "#stdout"), "hello from the form\n");
    assert.equal(await text(page, "#result"), "42");
    await page.waitForSelector("#figures img");
    await waitUntil(
      "the figure decoded",
      async () =>
        await page.$eval(
          "#figures img",
          (img) => (img as unknown as { naturalWidth: number }).naturalWidth,
        ) === 40,
    );
    assert.match(
      await page.$eval("#figures img", (img) => img.getAttribute("src") ?? ""),
      /^data:image\/png;base64,iVBOR/,
    );
    // The page as a person sees it after a run, kept as the test's artefact.
    await Deno.mkdir(ARTIFACTS, { recursive: true });
    await page.screenshot({
      path: new URL("status_page.png", ARTIFACTS).pathname as `${string}.png`,
      fullPage: true,
    });

    // Python's output is text, never markup.
    await page.locator("#code").fill("print('<img src=x onerror=alert(1)>')");
    await page.locator("#packages").fill("");
    await page.click("#run-button");
    await waitUntil(
      "the markup as text",
      async () => await text(page, "#stdout") === "<img src=x onerror=alert(1)>\n",
    );
    assert.equal((await page.$$("#stdout img")).length, 0);

    assert.deepEqual(problems, []);
  } finally {
    await browser.close();
    await http.stop();
  }
});
