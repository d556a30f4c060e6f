// Opens a `sockscope report --html` page from disk in Debian's chromium, driven by
// playwright-core (no browser download), and prints as one JSON object what a reader
// gets: console errors and page errors, every request other than the page itself
// (there must be none: the page is self-contained), and what the DOM shows (the
// PeerConnection bars with their outcomes, the socket bars, the leak rows with their
// kinds and cookies, the header's counts). It also hovers a leaked socket (the popover
// must show its details), zooms, and takes screenshots.
//
// usage: node check_report.mjs PAGE.html SCREENSHOT.png
// env: SOCKSCOPE_NODE_MODULES (the node_modules directory holding playwright-core),
//      SOCKSCOPE_BROWSER (default /usr/bin/chromium)
import { mkdtempSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";

const [page_path, shot] = process.argv.slice(2);
if (!page_path || !shot) {
  console.error("usage: node check_report.mjs PAGE.html SCREENSHOT.png");
  process.exit(2);
}
const modules = process.env.SOCKSCOPE_NODE_MODULES;
if (!modules) {
  console.error("SOCKSCOPE_NODE_MODULES is not set");
  process.exit(2);
}
const require = createRequire(join(modules, "check_report.cjs"));
const { chromium } = require("playwright-core");

const url = pathToFileURL(resolve(page_path)).href;
const profile = mkdtempSync(join(tmpdir(), "sockscope-chromium-"));
const errors = [];
const warnings = [];
const requests = [];
let context;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.SOCKSCOPE_BROWSER || "/usr/bin/chromium",
    headless: true,
    viewport: { width: 1440, height: 900 },
    // Root, no GPU, and no network: keep chromium from calling home.
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  context.on("request", (r) => {
    if (r.url() !== url) {
      requests.push(r.url());
    }
  });
  const page = context.pages()[0] || (await context.newPage());
  page.on("console", (m) => {
    const text = `${m.text()} (${m.location().url || "?"}:${m.location().lineNumber})`;
    if (m.type() === "error") {
      errors.push(text);
    } else if (m.type() === "warning") {
      warnings.push(text);
    }
  });
  page.on("pageerror", (e) => errors.push(`page error: ${e.message}`));
  const response = await page.goto(url, { waitUntil: "load" });

  const dom = await page.evaluate(() => {
    const box = (e) => {
      const r = e.getBoundingClientRect();
      return { x: r.x, y: r.y, width: r.width, height: r.height };
    };
    const counts = {};
    document.querySelectorAll("[data-count]").forEach((e) => {
      counts[e.dataset.count] = Number(e.textContent);
    });
    return {
      title: document.title,
      headline: document.querySelector("h1")?.textContent ?? null,
      counts,
      no_timeline: document.getElementById("no-timeline") !== null,
      legend: document.getElementById("legend")?.textContent ?? null,
      ticks: [...document.querySelectorAll(".axis .t")].map((e) => e.textContent),
      pc_bars: [...document.querySelectorAll(".pc-bar")].map((e) => ({
        pid: e.dataset.pid,
        pc_id: e.dataset.pcId,
        outcome: e.dataset.outcome,
        box: box(e),
      })),
      socket_bars: [...document.querySelectorAll(".sock-bar")].map((e) => ({
        cookie: e.dataset.cookie,
        leaked: e.dataset.leaked === "true",
        kind: e.dataset.kind,
        box: box(e),
      })),
      leak_rows: [...document.querySelectorAll("tr.leak")].map((e) => ({
        pid: e.dataset.pid,
        pc_id: e.dataset.pcId,
        cookie: e.dataset.cookie,
        kind: e.dataset.kind,
        text: e.innerText,
        site: e.querySelector(".site")?.innerText ?? null,
      })),
      tl_width: document.getElementById("tl")?.getBoundingClientRect().width ?? null,
    };
  });

  // Hover the first leaked socket (its red part): the popover shows its details.
  let hover = null;
  const leaked = page.locator('.sock-bar[data-leaked="true"] .lk').first();
  if ((await leaked.count()) > 0) {
    await leaked.scrollIntoViewIfNeeded();
    await leaked.hover({ force: true });
    hover = await page.evaluate(() => {
      const pop = document.getElementById("pop");
      return { visible: !!pop && !pop.hidden && pop.offsetWidth > 0, text: pop?.textContent ?? "" };
    });
    await page.screenshot({ path: shot.replace(/\.png$/, "") + "-hover.png" });
    await page.mouse.move(0, 0);
  }

  await page.screenshot({ path: shot, fullPage: true });

  // Zoom ×4: the timeline gets wider (and scrolls).
  let zoomed_width = null;
  const zoom = page.locator('button[data-zoom="4"]');
  if ((await zoom.count()) > 0) {
    await zoom.click();
    zoomed_width = await page.evaluate(() => document.getElementById("tl").getBoundingClientRect().width);
    await page.screenshot({ path: shot.replace(/\.png$/, "") + "-zoom4.png" });
  }

  console.log(
    JSON.stringify({
      url,
      status: response ? response.status() : null,
      errors,
      warnings,
      requests,
      hover,
      zoomed_width,
      ...dom,
    }),
  );
} finally {
  if (context) {
    await context.close();
  }
  rmSync(profile, { recursive: true, force: true });
}
