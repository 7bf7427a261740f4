// Opens the example page in headless Chromium, waits until every call has
// finished, prints the results as JSON on stdout and optionally saves a screenshot.
//
//   node check-page.mjs URL [SCREENSHOT.png]
//
// CHROMIUM (default /usr/bin/chromium) names the browser binary; playwright-core
// only drives it, it downloads nothing.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const [url, screenshot] = process.argv.slice(2);
if (!url) {
  console.error("usage: node check-page.mjs URL [SCREENSHOT.png]");
  process.exit(2);
}

const profile = mkdtempSync(join(tmpdir(), "chromium-profile-"));
// A fresh profile per run; playwright wants it as the persistent context's directory.
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  headless: true,
  viewport: { width: 1100, height: 560 },
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
try {
  const page = context.pages()[0] ?? (await context.newPage());
  const consoleLines = [];
  page.on("console", (msg) => consoleLines.push(`${msg.type()}: ${msg.text()}`));
  page.on("pageerror", (err) => consoleLines.push(`pageerror: ${err.message}`));
  await page.goto(url);
  try {
    await page.waitForSelector("body[data-done=true]", { timeout: 20000 });
  } finally {
    if (screenshot) {
      await page.screenshot({ path: screenshot, fullPage: true });
    }
  }
  const results = await page.evaluate(() => window.connectResults);
  const rendered = await page.$$eval("#results tr", (rows) =>
    rows.map((tr) => ({
      id: tr.id,
      status: tr.dataset.status,
      text: tr.querySelector(".detail")?.textContent ?? "",
    })),
  );
  process.stdout.write(JSON.stringify({ results, rendered, console: consoleLines }) + "\n");
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
