// drive.mjs — a headless chromium page that a test steers over stdin/stdout:
// one JSON command per line in, one JSON answer per line out.
//   {"op": "goto", "url": "..."}         load a page (waits for "load")
//   {"op": "eval", "js": "expression"}   evaluate in the page, answer its value
//   {"op": "shot", "path": "x.png"}      full-page screenshot
//   {"op": "quit"}
// Chromium is Debian's (/usr/bin/chromium, or $CHROMIUM); no browser download.
import { chromium } from "playwright-core";
import readline from "node:readline";

const exe = process.env.CHROMIUM || "/usr/bin/chromium";
const browser = await chromium.launch({
  executablePath: exe,
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const page = await browser.newPage({ viewport: { width: 1280, height: 720 } });
const out = (o) => process.stdout.write(JSON.stringify(o) + "\n");
out({ ok: true, ready: true });

const rl = readline.createInterface({ input: process.stdin });
for await (const line of rl) {
  let cmd;
  try {
    cmd = JSON.parse(line);
    if (cmd.op === "goto") {
      const r = await page.goto(cmd.url, { waitUntil: "load", timeout: 30000 });
      out({ ok: true, status: r ? r.status() : 0, url: page.url() });
    } else if (cmd.op === "eval") {
      out({ ok: true, value: await page.evaluate(cmd.js) });
    } else if (cmd.op === "shot") {
      await page.screenshot({ path: cmd.path, fullPage: true });
      out({ ok: true });
    } else if (cmd.op === "quit") {
      break;
    } else {
      out({ ok: false, error: "unknown op " + cmd.op });
    }
  } catch (e) {
    out({ ok: false, error: String(e && e.message || e) });
  }
}
await browser.close();
out({ ok: true, bye: true });
