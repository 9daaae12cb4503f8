#!/usr/bin/env node
// Drives one headless Debian chromium page for a Python test, one command at a time: JSON lines in on stdin,
// one JSON line out per command on stdout ({"id", "ok", "value"} or {"id", "ok": false, "error"}).
//
//   node driver.js --chromium PATH [--width 1280] [--height 800]
//
// Commands ({"id": n, "op": ..., ...}):
//   goto {url}                      load a page (waits for its load event)
//   eval {expr}                     the JSON value of a JavaScript expression in the page (awaited)
//   wait {expr, timeout}            poll until the expression is truthy; its value (fails at the deadline)
//   click {selector} / fill {selector, value} / press {selector, key}
//   addScript {path}                run a script file in the page (and in every page loaded after)
//   screenshot {path, fullPage}     a PNG of the page
//   log {}                          what the page said: console errors, page errors, failed requests
//   close {}                        close the browser and exit
// Every wait has a deadline; the browser's profile is a fresh temporary directory, removed at exit.
'use strict';

const fs = require('fs');
const os = require('os');
const path = require('path');
const readline = require('readline');
const { chromium } = require('playwright-core');

const ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--autoplay-policy=no-user-gesture-required',
];

function option(name, fallback) {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : fallback;
}

async function main() {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'livesrv-chromium-'));
  let ctx = null;
  const cleanup = async () => {
    if (ctx) await ctx.close().catch(() => {});
    ctx = null;
    fs.rmSync(profile, { recursive: true, force: true });
  };
  for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => cleanup().finally(() => process.exit(2)));
  const log = { console: [], pageErrors: [], failedRequests: [] };
  const keep = (list, item) => { if (list.length < 200) list.push(String(item).slice(0, 500)); };
  try {
    ctx = await chromium.launchPersistentContext(profile, {
      executablePath: option('--chromium', '/usr/bin/chromium'), headless: true, args: ARGS,
      viewport: { width: Number(option('--width', 1280)), height: Number(option('--height', 800)) },
    });
    const page = ctx.pages()[0] || (await ctx.newPage());
    page.on('console', (m) => { if (m.type() === 'error') keep(log.console, m.text()); });
    page.on('pageerror', (e) => keep(log.pageErrors, e));
    page.on('requestfailed', (r) => keep(log.failedRequests, `${r.url()} ${r.failure() && r.failure().errorText}`));
    page.on('dialog', (d) => d.dismiss().catch(() => {}));
    const ops = {
      goto: async (c) => { await page.goto(c.url, { waitUntil: 'load', timeout: 30000 }); return page.url(); },
      eval: async (c) => page.evaluate(c.expr),
      wait: async (c) => {
        const handle = await page.waitForFunction(c.expr, null, { timeout: (c.timeout || 20) * 1000, polling: 100 });
        return handle.jsonValue();
      },
      click: async (c) => { await page.click(c.selector, { timeout: 10000 }); return true; },
      fill: async (c) => { await page.fill(c.selector, c.value, { timeout: 10000 }); return true; },
      press: async (c) => { await page.press(c.selector, c.key, { timeout: 10000 }); return true; },
      addScript: async (c) => {
        const src = fs.readFileSync(c.path, 'utf8');
        await ctx.addInitScript(src);
        await page.evaluate(src);
        return true;
      },
      screenshot: async (c) => { await page.screenshot({ path: c.path, fullPage: !!c.fullPage }); return c.path; },
      log: async () => log,
    };
    const lines = readline.createInterface({ input: process.stdin });
    for await (const line of lines) {
      if (!line.trim()) continue;
      const cmd = JSON.parse(line);
      if (cmd.op === 'close') break;
      let out;
      try {
        const op = ops[cmd.op];
        if (!op) throw new Error('unknown op ' + cmd.op);
        out = { id: cmd.id, ok: true, value: (await op(cmd)) ?? null };
      } catch (e) {
        out = { id: cmd.id, ok: false, error: String(e && e.message || e).slice(0, 2000) };
      }
      process.stdout.write(JSON.stringify(out) + '\n');
    }
  } finally {
    await cleanup();
  }
}

main().then(() => process.exit(0), (e) => {
  process.stderr.write(String(e && e.stack || e) + '\n');
  process.exit(2);
});
